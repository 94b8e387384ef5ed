"""Plotly figures and small HTML views, one module per family (features, spectral, superposition, geometry)."""
