"""Atlas Streamlit shell (entry point: app/main.py)."""
