"""Fixtures: the tiny organism (owned by core/organism).

`tiny_organism_dir` runs the SAME pipeline as `python -m core.organism train --config tiny`
(world -> tokenizer -> model with checkpoints -> one SAE per layer) into a temporary directory,
once per test session, and returns that directory (same layout as assets/organism).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_organism_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from core.organism.train import config_by_name, run_pipeline

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("organism") / "tiny"
    try:
        run_pipeline(config_by_name("tiny"), out, log=lambda _message: None)
    finally:
        torch.set_num_threads(threads)  # the pipeline pins threads; give the session its own back
    return out
