"""The harvest on Ray: 2- and 3-shard runs on a local 2-CPU Ray cluster equal a single-process run
(exactly for counts, histograms, top-k and quantile contexts, reservoirs, co-occurrence; to float
tolerance for moments, covariances and sums), a worker killed mid-shard is retried with the same
result, a shard that fails for good fails the run naming it and leaves the store empty, checkpoint
harvests run as parallel tasks, and `python -m core analyze --ray ADDRESS` writes the local run's key.

The Ray tests skip when ray is not installed, except with ATLAS_REQUIRE_RAY=1 (CI), where that is a
failure. One Ray cluster is started for the module (Ray's start-up and each worker's first import of
torch/TransformerLens cost seconds on two cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import AtlasError
from core.harvest import HarvestResult, HarvestSettings, harvest, harvest_key
from core.harvest.distributed import (
    RayCluster,
    ShardFailedError,
    cluster_from_env,
    harvest_cached_on,
    harvest_on_ray,
    plan_shards,
    release_workers,
    spec_loader,
)
from core.store import ArtifactStore
from tests.ray_helpers import PoisonLoader, SlowLoader

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = HarvestSettings(batch_size=4, reservoir_size=64, top_k=4, cooc_chunk_tokens=64, quantile_samples=2)
CONTEXT = 32
N_CHUNKS = 36

EXACT_SAE = ("fire_count", "max_act", "hist", "top_values", "top_chunk", "top_pos", "top_tokens", "top_acts",
             "quantile_values", "quantile_chunk", "quantile_pos", "quantile_tokens", "quantile_acts",
             "cooc_chunks", "cooc_offsets", "cooc_ids")
EXACT_SITE = ("reservoir", "reservoir_chunk", "reservoir_pos", "reservoir_token")


# ---------------------------------------------------------------------------------------------
# without a cluster
# ---------------------------------------------------------------------------------------------
def test_shards_fall_on_batch_boundaries_and_cover_the_corpus():
    for n_sequences, batch, n_shards in [(36, 4, 2), (36, 4, 3), (23, 4, 3), (5, 4, 3), (1, 16, 4), (100, 7, 6)]:
        shards = plan_shards(n_sequences, batch, n_shards)
        assert shards[0].start == 0 and shards[-1].stop == n_sequences
        assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
        assert all(s.start % batch == 0 and s.stop > s.start for s in shards)
        assert len(shards) == min(n_shards, -(-n_sequences // batch))
        sizes = [s.stop - s.start for s in shards[:-1]]  # the last one may hold a partial batch
        assert not sizes or max(sizes) - min(sizes) <= batch  # about equal
    with pytest.raises(AtlasError):
        plan_shards(0, 4, 2)


def test_cluster_from_env():
    assert cluster_from_env({}) is None and cluster_from_env({"ATLAS_RAY_ADDRESS": " "}) is None
    assert cluster_from_env({"ATLAS_RAY_ADDRESS": "local"}) == RayCluster()
    remote = cluster_from_env({"ATLAS_RAY_ADDRESS": "ray://head:10001"})
    assert remote.address == "ray://head:10001" and not remote.local and "ray://head:10001" in remote.describe()
    with pytest.raises(AtlasError, match="at least 1"):
        RayCluster(workers=0)


def test_without_ray_core_imports_and_says_how_to_install(tmp_path):
    script = (
        "import sys, torch; sys.modules['ray'] = None\n"  # `import ray` raises ImportError from here on
        "import core.harvest, core.harvest.distributed, core.analysis, core.cli\n"
        "from core.harvest.distributed import RayCluster, harvest_on_ray\n"
        "corpus = type('C', (), {'tokens': torch.ones(4, 8, dtype=torch.long)})()\n"
        "try:\n"
        "    harvest_on_ray(object(), [], corpus, cluster=RayCluster())\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("RayUnavailableError") and "requirements-ray.txt" in done.stdout


def test_cli_rejects_ray_options_without_ray(tmp_path, capsys):
    from core.cli import main

    code = main(["analyze", "--model", "organism", "--ray-workers", "2", "--out", str(tmp_path / "x")])
    assert code == 2 and "--ray-workers and --ray-shards need --ray" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# a local Ray cluster for the module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray
    except ImportError:
        message = "ray is not installed (pip install -r requirements-ray.txt)"
        if os.environ.get("ATLAS_REQUIRE_RAY") == "1":
            pytest.fail(f"ATLAS_REQUIRE_RAY=1 but {message}")
        pytest.skip(message)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=96 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    yield ray
    release_workers()
    ray.shutdown()


@pytest.fixture(scope="module")
def organism(tiny_organism_dir):
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.saes import load_sae, organism_sae_specs

    model = load_model(ModelSpec(source="organism", path=str(tiny_organism_dir), device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs(str(tiny_organism_dir))]
    corpus = load_corpus(CorpusSpec(source="world", path=str(tiny_organism_dir), split="eval",
                                    context_size=CONTEXT, max_chunks=N_CHUNKS), model)
    assert corpus.tokens.shape[0] >= 24  # enough sequences for 3 shards of whole batches
    return model, saes, corpus


@pytest.fixture(scope="module")
def local(organism):
    model, saes, corpus = organism
    return harvest(model, saes, corpus, SETTINGS)


@pytest.fixture(scope="module")
def prefix_l1(organism):
    """Cumulative L1 mass per SAE after each kept token, in corpus order (brute force)."""
    model, saes, corpus = organism
    acts = model.run(corpus.tokens, [s.hook_name for s in saes])
    keep = (corpus.tokens != model.bos_token_id).reshape(-1)
    out = {}
    for sae in saes:
        x = acts[sae.hook_name].reshape(-1, sae.d_in)[keep]
        z = torch.clamp(sae.encode(x), min=0).double()
        out[sae.hook_name] = torch.cumsum(z, 0).numpy()
    return out


def assert_equal_results(sharded: HarvestResult, local: HarvestResult, prefix_l1) -> None:
    assert (sharded.n_tokens, sharded.n_positions, sharded.n_sequences) == \
        (local.n_tokens, local.n_positions, local.n_sequences)
    assert list(sharded.saes) == list(local.saes) and list(sharded.sites) == list(local.sites)
    for label, one in local.saes.items():
        two = sharded.saes[label]
        for name in EXACT_SAE:
            np.testing.assert_array_equal(getattr(two, name), getattr(one, name), err_msg=f"{label} {name}")
        assert (two.n_tokens, two.cooc_n_chunks, two.cooc_total_chunks, two.l0) == \
            (one.n_tokens, one.cooc_n_chunks, one.cooc_total_chunks, one.l0)
        assert two.splice == one.splice and one.splice is not None  # the first shard evaluates the whole block
        np.testing.assert_allclose(two.l1_mass, one.l1_mass, rtol=1e-12)
        assert two.explained_variance == pytest.approx(one.explained_variance, rel=1e-7)
        assert two.mse == pytest.approx(one.mse, rel=1e-7)
        # the L1 curve: each shard takes its snapshots at corpus-wide token counts (it is told its offset)
        np.testing.assert_array_equal(two.l1_snapshot_tokens, one.l1_snapshot_tokens)
        np.testing.assert_allclose(two.l1_snapshots, one.l1_snapshots, rtol=1e-12)
        for count, snapshot in zip(two.l1_snapshot_tokens, two.l1_snapshots):
            np.testing.assert_allclose(snapshot, prefix_l1[label][count - 1], rtol=1e-6, atol=1e-9)
    for hook, one in local.sites.items():
        two = sharded.sites[hook]
        assert two.n == one.n
        np.testing.assert_allclose(two.mean, one.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(two.cov, one.cov, rtol=1e-9, atol=1e-12)
        for name in EXACT_SITE:
            np.testing.assert_array_equal(getattr(two, name), getattr(one, name), err_msg=f"{hook} {name}")


def test_two_shards_equal_a_local_run(ray_cluster, organism, local, prefix_l1):
    model, saes, corpus = organism
    calls = []
    sharded = harvest_on_ray(model, saes, corpus, SETTINGS, cluster=RayCluster(workers=2, shards=2, keep_workers=True),
                             progress=lambda done, total, left: calls.append((done, total)))
    assert_equal_results(sharded, local, prefix_l1)
    assert sharded.sources["corpus"]["sha256"] == local.sources["corpus"]["sha256"]
    total = local.n_positions
    assert calls and calls[-1] == (total, total) and all(t == total and 0 < d <= t for d, t in calls)


def test_three_shards_on_two_workers_write_the_local_artifact(ray_cluster, organism, local, prefix_l1, tmp_path):
    model, saes, corpus = organism
    store = ArtifactStore(tmp_path / "store")
    cluster = RayCluster(workers=2, shards=3, keep_workers=True)
    result, key = harvest_cached_on(cluster, model, saes, corpus, SETTINGS, store)
    assert key == harvest_key(model, saes, corpus, SETTINGS)  # the local run's key
    assert_equal_results(result, local, prefix_l1)
    assert_equal_results(HarvestResult.load(store, key), local, prefix_l1)
    # a second call is a cache hit: no cluster work
    again, again_key = harvest_cached_on(cluster, model, saes, corpus, SETTINGS, store)
    assert again_key == key and again.seconds == result.seconds


def test_checkpoint_harvests_as_parallel_tasks_equal_local(ray_cluster, tiny_organism_dir, tmp_path):
    from core.analysis import checkpoint_options, spectra_over_checkpoints
    from core.sources.models import ModelSpec

    names = list(checkpoint_options(ModelSpec(source="organism", path=str(tiny_organism_dir))))
    picked = [names[0], names[-1]]
    local_store, ray_store = ArtifactStore(tmp_path / "local"), ArtifactStore(tmp_path / "ray")
    here = spectra_over_checkpoints(str(tiny_organism_dir), picked, max_tokens=256, store=local_store)
    reports: list[str] = []
    there = spectra_over_checkpoints(str(tiny_organism_dir), picked, max_tokens=256, store=ray_store,
                                     cluster=RayCluster(keep_workers=True),
                                     progress=lambda f, text: reports.append(text))
    assert there.checkpoint_keys == here.checkpoint_keys
    for metric in ("rankme", "alpha", "participation_ratio"):
        np.testing.assert_allclose(getattr(there, metric), getattr(here, metric), rtol=1e-9, err_msg=metric)
    assert any("checkpoints harvested on a local Ray cluster" in r for r in reports), reports
    for key in there.checkpoint_keys:  # each checkpoint's harvest, saved on the driver under the local key
        harvest_of = ray_store.load(key).meta["result"]["harvest"]
        assert ray_store.has(harvest_of) and local_store.has(harvest_of)


def test_a_worker_killed_mid_shard_is_retried(ray_cluster, organism, local, prefix_l1, tmp_path):
    model, saes, corpus = organism
    marks = tmp_path / "marks"
    marks.mkdir()
    loader = SlowLoader(spec_loader(model, saes, gpu=False), str(marks), delay=0.3)
    killed: list[int] = []

    def kill_the_first_running_worker() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            running = sorted(marks.glob("running-*"))
            if running:
                pid = int(running[0].name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_first_running_worker, daemon=True)
    killer.start()
    messages: list[str] = []
    sharded = harvest_on_ray(model, saes, corpus, SETTINGS, cluster=RayCluster(workers=2, shards=2, keep_workers=True),
                             loader=loader, say=messages.append)
    killer.join(timeout=5)
    assert killed, "no worker was seen running a shard"
    assert any("retrying shard" in m and "another worker" in m for m in messages), messages
    ran = {int(p.name.split("-")[1]) for p in marks.glob("running-*")}
    assert killed[0] in ran and len(ran - set(killed)) >= 1  # the shard ran again in another process
    assert_equal_results(sharded, local, prefix_l1)


def test_a_shard_failing_for_good_names_it_and_writes_nothing(ray_cluster, organism, tmp_path):
    model, saes, corpus = organism
    shards = plan_shards(corpus.tokens.shape[0], SETTINGS.batch_size, 2)
    poison = tuple(corpus.tokens[shards[1].start + SETTINGS.batch_size].tolist())  # inside shard 2
    loader = PoisonLoader(spec_loader(model, saes, gpu=False), poison)
    store = ArtifactStore(tmp_path / "store")
    messages: list[str] = []
    cluster = RayCluster(workers=2, shards=2, max_retries=1, keep_workers=True)
    settings = replace(SETTINGS, splice_tokens=0)  # else shard 1 runs the whole corpus through the splice check
    with pytest.raises(ShardFailedError) as raised:
        harvest_cached_on(cluster, model, saes, corpus, settings, store, loader=loader, say=messages.append)
    text = str(raised.value)
    assert isinstance(raised.value, AtlasError)
    assert f"shard 2 of 2 (corpus sequences {shards[1].start}-{shards[1].stop - 1})" in text
    assert "after 2 attempts" in text and "poisoned batch" in text
    assert len(messages) == 1 and "retrying shard 2 of 2" in messages[0]
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]  # no artifact, no component


def test_cli_ray_writes_the_local_runs_key(ray_cluster, tiny_organism_dir, tmp_path, capsys, monkeypatch):
    from core.cli import analyze, main
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.saes import load_sae, organism_sae_specs

    analysed = []  # the measurements after the harvest are tests/test_cli.py's; here: what they are given
    monkeypatch.setattr(analyze, "_run_analysis", lambda *args, **kwargs: analysed.append(kwargs) or [])
    out = tmp_path / "run"
    code = main(["analyze", "--model", "organism", "--organism-dir", str(tiny_organism_dir), "--sae", "organism",
                 "--corpus", "world", "--context-size", str(CONTEXT), "--max-tokens", "600", "--batch-size", "4",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--ray", "--ray-workers", "2",
                 "--ray-shards", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "harvesting on a local Ray cluster" in err and "tok/s" in err  # the tqdm bar over all shards
    assert analysed[0]["cluster"] == RayCluster(workers=2, shards=3) and analysed[0]["checkpoints"] is False
    summary = json.loads((out / "summary.json").read_text())
    directory = str(tiny_organism_dir)
    model = load_model(ModelSpec(source="organism", path=directory, device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs(directory)]
    corpus = load_corpus(CorpusSpec(source="world", path=directory, split="eval", context_size=CONTEXT,
                                    max_chunks=-(-600 // CONTEXT)), model)
    settings = HarvestSettings(batch_size=4, max_tokens=600)
    assert summary["harvest_key"] == harvest_key(model, saes, corpus, settings)  # the local run's key
    stored = HarvestResult.load(ArtifactStore(out / "store"), summary["harvest_key"])
    local = harvest(model, saes, corpus, settings)
    for label, one in local.saes.items():
        for name in ("fire_count", "hist", "top_chunk", "top_pos", "quantile_chunk", "cooc_ids"):
            np.testing.assert_array_equal(getattr(stored.saes[label], name), getattr(one, name))


def test_a_driver_elsewhere_ships_its_code_to_the_cluster(ray_cluster, tmp_path):
    """connect(address) from another process: the workers import the driver's core (Ray py_modules)."""
    address = ray_cluster.get_runtime_context().gcs_address
    script = (
        "import sys\n"
        "from core.harvest.ray_pool import connect\n"
        "ray = connect(sys.argv[1])\n"
        "where = ray.remote(lambda: __import__('core.harvest.ray_jobs').__file__).options(num_cpus=0).remote()\n"
        "print(ray.get(where))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, address], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "py_modules_files" in done.stdout and str(ROOT) not in done.stdout


# ---------------------------------------------------------------------------------------------
# the scheduler's failure paths, on a stand-in for ray (no cluster): lost inputs, bad input
# ---------------------------------------------------------------------------------------------
class _Lost(Exception):
    pass


class _ActorDied(Exception):
    pass


class _Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class _FakeRay:
    """Runs every remote call at once; a Ref holds a value or an error."""

    exceptions = type("exceptions", (), {"RayActorError": _ActorDied, "WorkerCrashedError": _ActorDied,
                                         "ObjectLostError": _Lost})

    def put(self, value):
        return _Ref(value)

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def options(self, **_):
        return self

    def remote(self, *args):
        try:
            value = self.fn(*[a.value if isinstance(a, _Ref) and a.error is None else a for a in args])
        except Exception as error:  # noqa: BLE001
            return _Ref(error=error), _Ref(error=error)
        return _Ref(value), _Ref({})


class _FakeWorker:
    """States are lists of shard indices; `script` says which call fails how, by call number."""

    def __init__(self, log, script):
        self.harvest = _Method(lambda loader, index, *rest: log.append(("harvest", index)) or
                               self._maybe_fail(log, script) or [index])
        self.merge = _Method(lambda left, right: log.append(("merge", tuple(left + right))) or
                             self._maybe_fail(log, script) or left + right)

    @staticmethod
    def _maybe_fail(log, script):
        error = script.get(len(log))
        if error is not None:
            raise error


class _FakeWorkers:
    def __init__(self, log, script):
        self.idle = [_FakeWorker(log, script)]
        self.starting = {}

    def take(self):
        return self.idle.pop() if self.idle else None

    def give_back(self, worker):
        self.idle.append(worker)

    replace = give_back


def _run_fake_tree(n_shards, script):
    from core.harvest.distributed import Shard
    from core.harvest.ray_jobs import TreeRun, build_tree, run_jobs

    ray, log = _FakeRay(), []
    shards = [Shard(i, 4 * i, 4 * i + 4) for i in range(n_shards)]
    run = TreeRun(ray, shards, torch.zeros(4 * n_shards, 8, dtype=torch.long), SETTINGS, None, None, [0] * n_shards)
    root = build_tree(run, 0, n_shards)
    messages = []
    run_jobs(ray, root.subtree(), _FakeWorkers(log, script), max_retries=2, finished=lambda: root.done,
             say=messages.append)
    return ray.get(root.value), log, messages


def test_the_tree_merges_in_corpus_order():
    state, log, messages = _run_fake_tree(5, {})
    assert state == [0, 1, 2, 3, 4] and not messages
    assert sorted(entry for entry in log if entry[0] == "harvest") == [("harvest", i) for i in range(5)]
    assert sum(entry[0] == "merge" for entry in log) == 4


def test_a_merge_whose_inputs_were_lost_harvests_its_subtree_again():
    # call 4 is the merge of shards 1-2 (harvests 0, 1, 2 first, merges before further shards)
    state, log, messages = _run_fake_tree(3, {4: _Lost("object lost with its node")})
    assert log[3] == ("merge", (1, 2))
    assert state == [0, 1, 2]
    assert [entry for entry in log if entry[0] == "harvest"].count(("harvest", 1)) == 2  # harvested again
    assert len(messages) == 1 and "the merge of shards 2-3 of 3" in messages[0]


def test_an_atlas_error_fails_at_once_and_a_worker_death_is_retried():
    with pytest.raises(ShardFailedError, match="shard 2 of 2 .*no such corpus") as raised:
        _run_fake_tree(2, {2: AtlasError("no such corpus")})
    assert "attempts" not in str(raised.value)  # not retried
    state, _, messages = _run_fake_tree(2, {2: _ActorDied("worker died")})
    assert state == [0, 1] and "retrying shard 2 of 2 (corpus sequences 4-7) on another worker" in messages[0]
