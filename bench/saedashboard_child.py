"""Runs SAEDashboard's runner (sae-dashboard 0.8.0) on inputs exported by bench/saedashboard.py; prints JSON.

Executed by the Python of SAEDashboard's own venv (transformer-lens 2.x, numpy 1.x), never imported by Atlas:
    <venv>/bin/python bench/saedashboard_child.py DIR
DIR holds model_cfg.json + model.safetensors (a HookedTransformer), sae/ (SAELens SAE.save_model), tokens.npy.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path


def main(directory: str) -> int:
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner
    from sae_lens import SAE
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.set_num_threads(int(json.loads((Path(directory) / "threads.json").read_text())))
    root = Path(directory)
    fields = {f.name for f in dataclasses.fields(HookedTransformerConfig)}
    cfg = {k: v for k, v in json.loads((root / "model_cfg.json").read_text()).items() if k in fields}
    model = HookedTransformer(HookedTransformerConfig(**cfg))
    missing, unexpected = model.load_state_dict(load_file(str(root / "model.safetensors")), strict=False)
    weights_missing = [k for k in missing if not k.endswith(("IGNORE", "mask"))]
    model.eval()
    sae = SAE.load_from_disk(str(root / "sae"), device="cpu")
    tokens = torch.from_numpy(np.load(root / "tokens.npy")).long()
    options = json.loads((root / "options.json").read_text())
    cached = options["cache_activations"]
    n_features = min(options.get("features") or sae.cfg.d_sae, sae.cfg.d_sae)
    with tempfile.TemporaryDirectory(prefix="saedash-cache-") as cache:
        config = SaeVisConfig(hook_point=sae.cfg.metadata.hook_name, features=list(range(n_features)),
                              device="cpu", dtype="float32", cache_dir=Path(cache) if cached else None)
        start = time.perf_counter()
        cpu = time.process_time()
        data = SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    # VmHWM, not getrusage: Linux carries ru_maxrss over fork and exec, so it would start at the parent's size
    status = Path("/proc/self/status").read_text()
    peak_rss_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024 if "VmHWM:" in status else float("nan")
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "features": len(data.feature_data_dict),
                      "peak_rss_mb": peak_rss_mb,
                      "tokens": int(tokens.numel()), "weights_missing": weights_missing,
                      "unexpected": list(unexpected)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
