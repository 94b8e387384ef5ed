"""Atlas: measuring concept geometry, superposition and spectral phases in language models."""

__version__ = "0.1.0"
