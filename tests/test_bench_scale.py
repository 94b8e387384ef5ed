"""`python -m bench scale` end to end on the tiny shape: build, harvest, every analysis, pages from the store."""

from __future__ import annotations

import json

from bench import bench_scale


def test_scale_rehearsal_runs_end_to_end_on_the_tiny_shape(tmp_path, capsys):
    out = tmp_path / "report.json"
    status = bench_scale.main(["--shape", "tiny", "--tokens", "2048", "--keep", str(tmp_path / "store"),
                               "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert status == 0, report["notes"]
    assert not [n for n in report["notes"] if "failed" in n]
    config = report["config"]
    assert config["sae_width"] == 256 and config["sae_layers"] == [0, 1]
    assert sorted(config["sae_architectures"]) == ["jumprelu", "topk"]
    assert config["tokens"] == 2048 and config["tokens_per_second"] > 0
    # every step and page was timed, the store holds the per-SAE components and the views
    assert "every analysis (core.analysis.run_all)" in report["seconds"]
    assert any(k.startswith("run_all: geometry") for k in report["seconds"])
    for page in ("Spectra (cached view)", "Geometry (cached view)", "Features: feature table (one layer)",
                 "Features: one feature's logit effects", "Probe: one 20-word prompt, every SAE"):
        assert page in report["pages"]
    assert report["disk_mb"]["harvest-sae"] > 0 and "analysis:geometry_by_layer" in report["disk_mb"]
    assert report["memory_mb"]["peak (sampled)"] > 0
    # a JumpReLU SAE calibrated to ~64 active features of 256, a TopK one at k = 32
    l0 = config["l0"]
    assert abs(l0["blocks.0.hook_resid_post"] - 32) < 1e-6 and 20 < l0["blocks.1.hook_resid_post"] < 130
    assert "scale rehearsal: tiny" in printed and "peak RSS" in printed


def test_bundle_bench_exports_and_imports_the_kept_store(tmp_path, capsys):
    from bench import bench_bundle

    assert bench_scale.main(["--shape", "tiny", "--tokens", "1024", "--keep", str(tmp_path / "store")]) == 0
    capsys.readouterr()
    assert bench_bundle.main(["--store", str(tmp_path / "store")]) == 0
    printed = capsys.readouterr().out
    assert "harvest" in printed and "import / copy" in printed
    ratio = float(printed.split(" x the artifacts'")[0].rsplit("= ", 1)[1])
    assert 0 < ratio < 1.5   # deflated npy and JSON, plus the manifest and report
