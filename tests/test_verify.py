"""The ground-truth card on the tiny organism: the table is produced, every row is well formed, and the
sanity rows (what any model must satisfy) pass; structure rows may fail on a seconds-long model."""

from __future__ import annotations

import json

import pytest

from core.organism import verify


@pytest.fixture(scope="module")
def card(tiny_organism_dir, tmp_path_factory):
    from core.store import ArtifactStore

    store = ArtifactStore(tmp_path_factory.mktemp("verify_store"))
    return verify.build_card(tiny_organism_dir, quick=True, store=store), store


def test_card_rows_are_well_formed(card):
    rows, _ = card
    assert rows
    for row in rows:
        assert row.status in {verify.PASS, verify.FAIL, verify.INFO, verify.SKIPPED}
        assert row.kind in {"sanity", "structure", "info", "causal"}
        assert row.measurement and row.measured
        assert row.expected or row.status == verify.SKIPPED


def test_card_has_every_required_row(card):
    rows, _ = card
    names = [r.measurement for r in rows]
    for layer in ("L0", "L1"):
        for label in ("effective features F", "interference of decoder rows", "RankMe", "alpha-ReQ",
                      "TwoNN intrinsic dimension", "galaxy alpha", "lobes AMI vs null", "weekdays circle",
                      "months circle", "spectral phases over"):
            assert any(n.startswith(label) and f"({layer})" in n for n in names), (label, layer)
    for label in ("interference of unembedding rows", "weekdays circle found", "months circle found",
                  "city probe R^2", "birth-year probe R^2", "analogy parallelism", "hierarchical orthogonality (animal)",
                  "spectral phases seen", "loss recovered, SAE spliced in (L0)", "months: circle turn vs random plane",
                  "weekdays: circle turn vs random plane", "latitude erasure: north/south answers"):
        assert any(n.startswith(label) for n in names), label
    causal = [i for i, r in enumerate(rows) if r.kind == "causal"]
    assert causal and causal == list(range(len(rows) - len(causal), len(rows)))  # last, after the other rows
    alpha_rows = [r for r in rows if r.measurement.startswith("alpha-ReQ")]
    assert all("over ranks" in r.measured and "adapted" in r.measured for r in alpha_rows)  # fit range stated


def test_sanity_rows_pass_on_the_tiny_organism(card):
    rows, _ = card
    failed = [r for r in rows if r.kind == "sanity" and r.status != verify.PASS]
    assert not failed, failed


def test_main_prints_the_table_and_json(tiny_organism_dir, card, capsys):
    _, store = card
    code = verify.main(["--dir", str(tiny_organism_dir), "--quick", "--cache-dir", str(store.root)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split(" | ")[0].strip() == "measurement"
    assert "pass," in out.splitlines()[-1]
    assert "months: circle turn vs random plane" in out  # the causal rows come last
    code = verify.main(["--dir", str(tiny_organism_dir), "--quick", "--cache-dir", str(store.root), "--json",
                        "--no-checkpoints", "--no-causal"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and {"measurement", "measured", "expected", "status", "kind"} <= set(rows[0])
    assert not any(r["measurement"].startswith("spectral phases") for r in rows)
    assert not any(r["kind"] == "causal" for r in rows)


def test_main_reports_a_missing_directory(tmp_path, capsys):
    assert verify.main(["--dir", str(tmp_path / "nowhere"), "--quick", "--cache-dir", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
