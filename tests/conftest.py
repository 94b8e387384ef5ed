"""Shared test setup. Fixtures live in the plugin modules below, one per area."""

import os

# Offline first: the hub client reads this at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_organism", "tests.fixtures_app"]

# Property tests: no per-example time limit (the CI machine is shared and noisy) and a fixed
# example stream, so a run is reproducible; `HYPOTHESIS_PROFILE=explore` searches afresh.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", deadline=None, derandomize=True)
_hypothesis_settings.register_profile("explore", deadline=None)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
