"""Fixtures: tiny models and SAEs (owned by the source layer)."""
