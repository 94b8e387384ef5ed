"""The store under faults: checksums, corrupt entries recomputed with a notice, imported namespaces,
8 writers + 8 readers on one key, kill -9 during a write, stale leftovers cleaned on start.

Each test fails without the protection it names (the legacy store of bench/bench_store.py is the
"without": tests/test_store_reliability.py::test_legacy_store_fails_under_concurrency shows it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.bench_store import KEY, run_processes
from core import store as store_module
from core.analysis.keys import cached_result
from core.errors import ArtifactError
from core.jsonable import Result
from core.store import ArtifactStore, StoreView, artifact_key

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = {"a": np.arange(1000, dtype=np.float64), "b": np.ones((10, 3), dtype=np.int32)}


def _saved(tmp_path, key=None):
    store = ArtifactStore(tmp_path, notify=lambda message: None)
    key = key or artifact_key(test="reliability")
    path = store.save(key, ARRAYS, {"kind": "test", "n": 3})
    return store, key, path


def _flip_bit(file: Path, offset_from_end: int = 100) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    lambda p: _flip_bit(p / "a.npy"),                                        # a flipped bit in the data
    lambda p: (p / "a.npy").write_bytes((p / "a.npy").read_bytes()[:-800]),  # a truncated array
    lambda p: (p / "b.npy").unlink(),                                        # a missing array file
    lambda p: (p / "meta.json").write_text(                                  # an edited meta.json
        (p / "meta.json").read_text().replace('"n": 3', '"n": 4')),
    lambda p: (p / "meta.json").write_text("{not json"),                     # an unreadable meta.json
    lambda p: (p / "COMPLETE").write_text(p.name),                           # an entry of the old format
])
def test_a_corrupt_entry_is_removed_with_a_notice_and_reported_absent(tmp_path, damage):
    store, key, path = _saved(tmp_path)
    assert store.verify(key) is None
    damage(path)
    assert store.verify(key) is not None          # verify reports it and changes nothing
    assert store.has(key)
    assert store.load(key) is None                # load: absent, so the caller recomputes
    assert not store.has(key) and not path.exists()
    assert len(store.notices) == 1 and "recomputed" in store.notices[0] and key[:12] in store.notices[0]
    store.save(key, ARRAYS, {"kind": "test", "n": 3})  # the recomputed result is saved again
    np.testing.assert_array_equal(store.load(key).arrays["a"], ARRAYS["a"])


def test_a_header_declaring_a_huge_shape_is_refused_before_allocation(tmp_path):
    store, key, path = _saved(tmp_path)
    raw = (path / "a.npy").read_bytes()
    header_length = int.from_bytes(raw[8:10], "little")
    forged_header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }".ljust(header_length - 1)
    forged = raw[:10] + (forged_header + "\n").encode("latin1") + raw[10 + header_length:]
    assert len(forged) == len(raw)                      # same size as recorded: only the header check can tell
    (path / "a.npy").write_bytes(forged)
    assert store.load(key, mmap=False) is None
    assert "(1000000000000,)" in store.notices[0] and "truncated or corrupt" in store.notices[0]


@dataclass(frozen=True, eq=False)
class _Value(Result):
    value: int
    key: str = ""


def test_cached_results_are_recomputed_after_corruption(tmp_path):
    store = ArtifactStore(tmp_path, notify=lambda message: None)
    calls = []

    def compute():
        calls.append(1)
        return _Value(42)

    first = cached_result(store, "reliability_view", {"x": 1}, compute, _Value)
    assert cached_result(store, "reliability_view", {"x": 1}, compute, _Value) == first and len(calls) == 1
    meta = store.path_for(first.key) / "meta.json"
    meta.write_text(meta.read_text().replace("42", "43"))      # a forged or flipped number
    again = cached_result(store, "reliability_view", {"x": 1}, compute, _Value)
    assert again.value == 42 and len(calls) == 2 and store.notices


def test_harvest_cached_recomputes_a_corrupt_harvest(tiny_model, tmp_path):
    import torch

    from core.harvest import HarvestSettings, harvest_cached
    from core.sources.corpus import Corpus, CorpusSpec
    from core.sources.saes import wrap_sae
    from tests.fixtures_models import make_tiny_sae
    from tests.test_harvest import CountingModel

    tokens = torch.randint(3, tiny_model.d_vocab, (6, 8), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = tiny_model.bos_token_id
    corpus = Corpus(CorpusSpec(context_size=8), tokens, "random tokens")
    saes = [wrap_sae(make_tiny_sae("topk", hook_name="blocks.0.hook_resid_post", seed=1))]
    settings = HarvestSettings(batch_size=3, reservoir_size=8, top_k=2, quantile_samples=1)
    notices = []
    store = ArtifactStore(tmp_path, notify=notices.append)
    model = CountingModel(tiny_model)
    first, key = harvest_cached(model, saes, corpus, settings, store)
    expected = np.array(first.saes["blocks.0.hook_resid_post"].l1_mass)   # a copy: the arrays are memory-mapped
    calls = model.calls
    harvest_cached(model, saes, corpus, settings, store)
    assert model.calls == calls                                   # a hit
    array = next(store.path_for(key).glob("sae0__l1_mass.npy"))
    _flip_bit(array, 8)
    again, _ = harvest_cached(model, saes, corpus, settings, store)
    # the harvest's files are hard links of its per-SAE component (core.harvest.components): both fail their
    # checks, both are removed with a notice, the SAE's statistics are recomputed and the harvest reassembled
    assert model.calls == 2 * calls and len(notices) == 2
    np.testing.assert_array_equal(again.saes["blocks.0.hook_resid_post"].l1_mass, expected)
    assert store.verify(key) is None


def test_namespaces_are_separate_read_only_and_all_or_nothing(tmp_path):
    store, key, _ = _saved(tmp_path)
    forged = {key: ({"a": np.full(1000, 666.0)}, {"kind": "test", "n": 666})}
    imported = store.write_namespace("abcd1234", forged)
    assert store.load(key).meta["n"] == 3                          # the local entry is untouched
    assert imported.load(key).meta["n"] == 666 and store.namespaces() == ["abcd1234"]
    assert key in set(imported.iter_keys()) and list(store.iter_keys()) == [key]
    with pytest.raises(ArtifactError, match="read-only"):
        imported.save(key, ARRAYS, {})
    with pytest.raises(ArtifactError, match="already exists"):
        store.write_namespace("abcd1234", forged)
    view = StoreView(store, imported)
    assert view.load(key).meta["n"] == 3                            # local results first
    other = artifact_key(test="only imported")
    store.write_namespace("efgh5678", {other: ({}, {"kind": "test"})})
    assert StoreView(store, store.namespace("efgh5678")).load(other).meta["kind"] == "test"
    assert store.load(other) is None
    # a failure halfway through leaves no namespace and no temporary folder behind
    bad = {artifact_key(test="ok"): ({"x": np.ones(2)}, {"kind": "t"}),
           artifact_key(test="bad"): ({"x": np.array([object()], dtype=object)}, {"kind": "t"})}
    with pytest.raises(ArtifactError):
        store.write_namespace("broken12", bad)
    assert not store.has_namespace("broken12")
    assert sorted(p.name for p in (tmp_path / "imports").iterdir()) == ["abcd1234", "efgh5678"]
    assert store.delete_namespace("abcd1234") and not store.has_namespace("abcd1234")


def test_stale_leftovers_are_cleaned_when_a_root_is_first_opened(tmp_path, monkeypatch):
    store, key, path = _saved(tmp_path)
    old = path.parent / ".tmp-abcdefabcdef-killed"
    fresh = path.parent / ".tmp-abcdefabcdef-writing"
    for leftover in (old, fresh):
        leftover.mkdir()
        (leftover / "a.npy").write_bytes(b"x" * 1000)
    hour_ago = time.time() - store_module.STALE_SECONDS - 60
    os.utime(old, (hour_ago, hour_ago))
    monkeypatch.setattr(store_module, "_cleaned_roots", set())
    ArtifactStore(tmp_path)
    assert not old.exists() and fresh.exists()                       # a write in progress is left alone
    assert store.load(key) is not None


def test_eight_writers_and_eight_readers_on_one_key(tmp_path):
    """8 writer processes x 12 saves and 8 reader processes x 30 loads of one key: no error, no torn
    read, no false 'missing', and a complete entry at the end."""
    result = run_processes("atlas", str(tmp_path), writers=8, readers=8, saves=12, loads=30, n_values=20_000)
    assert result["errors"] == 0, result["first_errors"]
    assert result["torn"] == 0 and result["false_missing"] == 0 and result["final_complete"]
    assert result["writer_ops"] == 96 and result["reader_ops"] == 240
    store = ArtifactStore(tmp_path)
    assert store.verify(KEY) is None
    assert not [p for p in (tmp_path / KEY[:2]).iterdir() if p.name.startswith((".tmp-", ".old-"))]


@pytest.mark.slow
def test_legacy_store_fails_under_concurrency(tmp_path):
    """The same load on the rename discipline without a lock (the store before this work) fails: the
    protection above is what makes the difference."""
    result = run_processes("legacy", str(tmp_path), writers=8, readers=8, saves=12, loads=30, n_values=20_000)
    assert result["errors"] + result["false_missing"] + result["torn"] > 0


_KILL_WRITER = """
import sys, numpy as np
from core.store import ArtifactStore
store = ArtifactStore(sys.argv[1])
i = 0
while True:
    i += 1
    store.save(sys.argv[2], {"a": np.full(3_000_000, i, np.int64), "b": np.full(100, -i)}, {"tag": i})
"""


def test_kill_9_during_writes_never_leaves_a_partial_entry(tmp_path, monkeypatch):
    """A writer killed with SIGKILL at 5 moments: the key always loads complete (or absent before the first
    save), the lock is free again, and the leftovers are removed by the start-up clean-up."""
    key = artifact_key(test="kill")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed_mid_write = 0
    shard = tmp_path / key[:2]
    for attempt in range(5):
        before = set(shard.glob(".tmp-*")) if shard.exists() else set()
        proc = subprocess.Popen([sys.executable, "-c", _KILL_WRITER, str(tmp_path), key], cwd=ROOT, env=env)
        deadline = time.time() + 120
        # wait until this writer is inside a save (a new temporary directory), plus a varying delay
        while time.time() < deadline and not (shard.exists() and set(shard.glob(".tmp-*")) - before):
            time.sleep(0.01)
        time.sleep(0.05 * attempt)
        killed_mid_write += bool(set(shard.glob(".tmp-*")) - before)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = ArtifactStore(tmp_path, notify=lambda message: None)
        artifact = store.load(key)
        if artifact is not None:
            assert np.all(artifact.arrays["a"] == artifact.meta["tag"]) and artifact.arrays["a"].size == 3_000_000
        assert not store.notices                                    # never a corrupt entry
    assert killed_mid_write >= 1
    # the lock is free: a save goes through at once
    store = ArtifactStore(tmp_path)
    store.save(key, {"a": np.zeros(2)}, {"tag": 0})
    assert store.load(key).meta["tag"] == 0
    leftovers = [p for p in (tmp_path / key[:2]).iterdir() if p.name.startswith(".tmp-")]
    past = time.time() - store_module.STALE_SECONDS - 1
    for leftover in leftovers:
        os.utime(leftover, (past, past))
    monkeypatch.setattr(store_module, "_cleaned_roots", set())
    ArtifactStore(tmp_path)
    assert not [p for p in (tmp_path / key[:2]).iterdir() if p.name.startswith(".tmp-")]


def test_bench_store_is_registered():
    from bench.__main__ import BENCHMARKS

    assert "store" in BENCHMARKS and "corpus" in BENCHMARKS
    done = subprocess.run([sys.executable, "-m", "bench", "store", "--writers", "1", "--readers", "1", "--saves", "2",
                           "--loads", "2", "--mb", "0.2"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "atlas" in done.stdout and "legacy" in done.stdout
