"""Fixtures: the tiny organism (owned by core/organism)."""
