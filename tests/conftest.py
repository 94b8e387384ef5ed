"""Shared test setup. Fixtures live in the plugin modules below, one per area."""

import os

# Offline first: the hub client reads this at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_organism", "tests.fixtures_app"]
