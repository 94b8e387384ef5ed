"""Loaders for the Ray tests: they run inside Ray workers, which import them from here (tests/ is on the
workers' PYTHONPATH), so they live in a plain module rather than in the test file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.harvest.distributed import SpecLoader


@dataclass(frozen=True)
class SlowLoader:
    """The real loader, with a model whose forward pass waits `delay` seconds per batch (so a test can
    kill the worker mid-shard) and marks in `marks`: load-<pid> when a worker loaded the model,
    running-<pid> once it runs a batch."""

    inner: SpecLoader
    marks: str
    delay: float

    def __call__(self) -> tuple[Any, list]:
        model, saes = self.inner()
        Path(self.marks, f"load-{os.getpid()}").touch()
        forward = model.run

        def slow_run(tokens, hook_names, *args, **kwargs):
            Path(self.marks, f"running-{os.getpid()}").touch()
            time.sleep(self.delay)
            return forward(tokens, hook_names, *args, **kwargs)

        model.run = slow_run
        return model, saes


@dataclass(frozen=True)
class PoisonLoader:
    """The real loader, with a model whose forward pass raises on the batch starting with `poison`
    (one sequence's tokens): a shard that fails every time."""

    inner: SpecLoader
    poison: tuple[int, ...]

    def __call__(self) -> tuple[Any, list]:
        model, saes = self.inner()
        forward = model.run

        def poisoned_run(tokens, hook_names, *args, **kwargs):
            if tuple(tokens[0].tolist()) == self.poison:
                raise RuntimeError("poisoned batch (test)")
            return forward(tokens, hook_names, *args, **kwargs)

        model.run = poisoned_run
        return model, saes
