"""Ray benchmark: the same harvest on 1 Ray worker and on 2, side by side, against a local run.

On the same input (the organism with its SAEs on its world corpus, or a random model of its shape)
it times, on a local Ray cluster of --cpus CPUs:
    local        core.harvest.harvest in this process, 1 torch thread (as each worker has)
    1 worker     harvest_on_ray, 1 shard on 1 worker (1 CPU)
    2 workers    harvest_on_ray, 2 shards on 2 workers (1 CPU each), merged
each warm (workers kept with the model loaded, median of --repeats) and once cold (workers started
and the model loaded inside the timing, as a one-off CLI run pays). Ratios: 1 worker / 2 workers
(the speed-up of a second worker) and 2 workers / local (the overhead of going through Ray).

On a 2-core machine the two workers share the cores with the driver, the raylet and the object
store, so this shows Ray's overhead, not a speed-up: a speed-up needs a worker per GPU or per idle
core (docs/SCALING.md has the cost model). Also printed: a shard state's size as sent between
processes, and the time of one merge (median; the copy that keeps the inputs intact subtracted).

    python -m bench ray [--tokens N] [--repeats R] [--cpus C] [--random-organism]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.common import organism_sources  # noqa: E402
from core.harvest import HarvestSettings, harvest, harvest_shard  # noqa: E402


def _timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384, help="corpus tokens harvested per run")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per setting (median)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("skipped: ray is not installed (pip install -r requirements-ray.txt)")
        return 0
    from core.harvest.distributed import RayCluster, harvest_on_ray, release_workers
    from core.harvest.ray_pool import portable
    from core.sources.corpus import CorpusSpec, load_corpus

    sources = organism_sources("cpu")
    if not sources.label.startswith("organism"):
        print("the Ray benchmark needs the committed organism (its workers load it from assets/organism)")
        return 2
    model, saes = sources.model, sources.saes
    corpus = load_corpus(CorpusSpec(source="world", split="eval", context_size=64,
                                    max_chunks=max(2, args.tokens // 64)), model)
    settings = HarvestSettings(batch_size=args.batch_size)
    n_tokens = int(corpus.tokens.numel())
    print(f"sources: {sources.label}; corpus {tuple(corpus.tokens.shape)} = {n_tokens:,} tokens; "
          f"driver torch threads {torch.get_num_threads()}; machine CPUs {os.cpu_count()}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # workers import this checkout
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    report: dict = {"sources": sources.label, "tokens": n_tokens, "cluster_cpus": args.cpus}
    try:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # like each worker (Ray gives an actor of 1 CPU one thread)
        harvest(model, saes, corpus, settings)  # warm-up, as the warm workers had
        local_s = statistics.median(_timed(lambda: harvest(model, saes, corpus, settings))[0]
                                    for _ in range(args.repeats))
        torch.set_num_threads(threads)
        cold, warm = {}, {}
        for workers in (1, 2):
            release_workers()
            cluster = RayCluster(workers=workers, shards=workers, keep_workers=True)
            cold[workers] = _timed(lambda: harvest_on_ray(model, saes, corpus, settings, cluster=cluster))[0]
            warm[workers] = statistics.median(
                _timed(lambda: harvest_on_ray(model, saes, corpus, settings, cluster=cluster))[0]
                for _ in range(args.repeats))
        release_workers()
        half = corpus.tokens.shape[0] // 2
        first = portable(harvest_shard(model, saes, corpus, settings, 0, half))
        second = portable(harvest_shard(model, saes, corpus, settings, half, corpus.tokens.shape[0]))
        state_bytes = len(pickle.dumps(first, protocol=5))
        merge_s = statistics.median(_timed(lambda: copy.deepcopy(first).merge(second))[0]
                                    - _timed(lambda: copy.deepcopy(first))[0] for _ in range(args.repeats))
    finally:
        ray.shutdown()
    report.update({
        "local_s": round(local_s, 3), "local_tokens_per_s": round(n_tokens / local_s),
        "warm_1_worker_s": round(warm[1], 3), "warm_2_workers_s": round(warm[2], 3),
        "cold_1_worker_s": round(cold[1], 3), "cold_2_workers_s": round(cold[2], 3),
        "speedup_2_over_1_warm": round(warm[1] / warm[2], 3),
        "speedup_2_over_1_cold": round(cold[1] / cold[2], 3),
        "overhead_2_workers_over_local_warm": round(warm[2] / local_s, 3),
        "shard_state_mib": round(state_bytes / 2**20, 2), "merge_s": round(merge_s, 4),
    })
    print(f"local (1 thread)          {local_s:8.2f} s  ({n_tokens / local_s:,.0f} tokens/s)")
    print(f"1 worker,  warm / cold   {warm[1]:8.2f} s / {cold[1]:.2f} s")
    print(f"2 workers, warm / cold   {warm[2]:8.2f} s / {cold[2]:.2f} s")
    print(f"1 worker / 2 workers     {warm[1] / warm[2]:8.2f} x warm, {cold[1] / cold[2]:.2f} x cold "
          f"(> 1: the second worker helps)")
    print(f"2 workers / local        {warm[2] / local_s:8.2f} x warm (Ray's overhead on this machine)")
    print(f"shard state sent back    {state_bytes / 2**20:8.2f} MiB; one merge {merge_s * 1000:.1f} ms")
    print(f"note: {os.cpu_count()} cores shared by the driver, the workers and Ray's own processes: this shows "
          "the overhead of sharding, not a speed-up (docs/SCALING.md)")
    print("RESULT", json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
