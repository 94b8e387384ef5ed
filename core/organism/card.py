"""The organism's ground-truth card: measured numbers as Markdown tables (for docs/ORGANISM.md)."""

from __future__ import annotations

import json
from pathlib import Path

from core.sources.organism import load_ground_truth, resolve_dir


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_card(directory: Path | None = None) -> str:
    """Training config, held-out loss, accuracy per family and the SAE table from manifest.json."""
    directory = resolve_dir(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    held_out = load_ground_truth(directory)["eval_facts"]["held_out"]
    config, metrics = manifest["config"], manifest["metrics"]
    keys = ["n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "steps", "batch_size", "lr", "weight_decay",
            "warmup_steps", "seed", "held_out_fraction"]
    parts = [
        "Training config: " + ", ".join(f"{k}={config[k]}" for k in keys)
        + f"; {metrics['train_tokens']:,} training tokens in {metrics['train_seconds'] / 60:.1f} min "
        f"(code {manifest['code_version']}).",
        f"Held-out LM loss (eval documents): {metrics['eval_loss']:.4f} nats/token.",
        _table(["family", "held-out accuracy", "train accuracy", "held-out facts"],
               [[family, f"{acc:.3f}", f"{metrics['accuracy']['train'][family]:.3f}", len(held_out[family])]
                for family, acc in metrics["accuracy"]["held_out"].items()]),
        _table(["SAE", "d_sae", "k", "explained variance", "L0", "dead (never fired on eval)"],
               [[hook, m["d_sae"], m["k"], f"{m['explained_variance']:.3f}", f"{m['l0']:.1f}",
                 f"{m['dead_fraction']:.3f}"] for hook, m in metrics["saes"].items()]),
        f"Assets: {len(manifest['files'])} files, {manifest['total_bytes'] / 1e6:.1f} MB.",
    ]
    return "\n\n".join(parts)


def structure_card(report: dict) -> str:
    """Circles, city probe and analogy parallelism per site, from structure.structure_report."""
    rows = []
    for site, entry in report.items():
        row = [site]
        for name in ("weekdays", "months"):
            c = entry.get(name)
            if c is None:
                row += ["", ""]
                continue
            row += [f"f={c['best_coprime_frequency']} ({c['best_share']:.2f}; f1 {c['calendar_share']:.2f})",
                    f"{c['neighbour_consistency']:.2f} @ step {c['neighbour_step']}"]
        row.append(f"{entry['city_probe_r2']:.3f}" if "city_probe_r2" in entry else "")
        a = entry.get("analogies")
        row.append(f"{a['within']:.2f} / {a['across']:.2f}" if a else "")
        rows.append(row)
    return _table(["site", "weekdays: best freq (share; calendar share)", "weekday circle order",
                   "months: best freq (share; calendar share)", "month circle order",
                   "city probe R^2 (held-out cities)", "analogy cos within / across"], rows)
