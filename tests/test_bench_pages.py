"""`python -m bench pages` end to end on the tiny shape: a local model directory and SAELens directories, the store
built as the dashboard builds it, every page opened in headless Chromium from it.

Skipped without /usr/bin/chromium or playwright, unless ATLAS_REQUIRE_BROWSER=1 (then a failure). Timings are
printed by the bench, never asserted: this checks that each page showed its real content from the stored
artifacts (nothing the pages read was computed on the visit), that no page showed an error, and that a reload
kept the sources.
"""

from __future__ import annotations

import json
import os

import pytest

from bench import bench_pages
from bench.browser import browser_missing

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_every_page_opens_from_the_stored_artifacts_of_a_local_model(tmp_path, capsys):
    missing = browser_missing()
    if missing:
        if os.environ.get("ATLAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ATLAS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    out = tmp_path / "pages.json"
    pages = ["probe", "features", "feature", "geometry", "spectra"]   # those reading stored views (the bench: all)
    status = bench_pages.main(["--shape", "tiny", "--tokens", "1024", "--keep", str(tmp_path / "store"),
                               "--json", str(out), "--pages", ",".join(pages)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert status == 0
    assert result["sae_width"] == 256 and result["saes"] == ["0:topk", "1:jumprelu"]
    assert list(result["pages"]) == pages
    for name, row in result["pages"].items():
        assert row["errors_shown"] == 0, name
        assert 0 < row["content_visible_s"] <= row["script_done_s"], name
    assert result["reload_keeps_sources"] is True
    # every view the pages read was stored by the harvest and run_all: the visits wrote nothing of theirs
    written = [entry for entry in result["written_by_the_visits"] if not entry.startswith(("probe", "?"))]
    assert written == [], written
    assert "pages in Chromium: tiny" in printed and "features" in printed
    # the stored sources are reused by a second run (--keep)
    prepared = json.loads((tmp_path / "store" / "prepared.json").read_text())
    assert prepared["query"].startswith("model=hf_dir&hf=") and prepared["query"].count("sae=dir%3A") == 2
