"""End to end in headless Chromium: probe a prompt, open a feature, save a session, reopen it by its full link
(banner with its title), change the SAE set and reload (the sources stay); no Deploy button, and no request
leaves the machine (the app promises local-only).

Starts the real server (`streamlit run app/main.py`) on a free port and drives Debian's chromium with
Playwright. Screenshots go to test-artifacts/. Skipped when /usr/bin/chromium is missing, unless
ATLAS_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, LAUNCH_ARGS, PAGE_CONTENT, ROOT, browser_missing, cpu_seconds, serve, wait_idle

ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 120_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> None:
    missing = browser_missing()
    if missing:
        if os.environ.get("ATLAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ATLAS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)   # a first page may harvest on a busy machine: wait as long as a page


def _serve(tmp_path: Path, **env_changes: str | None):
    """The real server (bench.browser.serve) with ATLAS_HOME / ATLAS_CACHE_DIR in tmp_path."""
    return serve(tmp_path / "home", tmp_path / "cache", tmp_path / "server.log", **env_changes)


@pytest.fixture
def server(tiny_organism_dir, tmp_path):
    _require_browser()
    with _serve(tmp_path, ATLAS_ORGANISM_DIR=str(tiny_organism_dir)) as (base, _process):
        yield base


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(800)   # let Plotly finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _wait_idle(page) -> None:
    wait_idle(page, TIMEOUT_MS)


def test_probe_feature_session_round_trip(server):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)   # the first render harvests: seconds on a loaded machine
    prompt = "monday tuesday wednesday"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        requested: list[str] = []
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 2400})
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server)
            expect(page.get_by_role("heading", name="Atlas", exact=True)).to_be_visible()
            _wait_idle(page)
            expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
            expect(page.get_by_text("Deploy", exact=True)).to_have_count(0)
            _shot(page, "01-home")

            page.get_by_role("link", name="Probe").click()
            box = page.locator("textarea[aria-label='Prompt']")
            box.fill(prompt)
            box.press("Control+Enter")
            _wait_idle(page)
            expect(page.locator("span[title*=\"'wednesday'\"]").first).to_be_visible()
            expect(page.get_by_text("Logit lens", exact=False).first).to_be_visible()
            _shot(page, "02-probe")

            page.get_by_role("link", name="Features").click()
            # A fresh session opens the feature with the largest share of the L1 mass (alive by construction).
            first = page.get_by_role("heading", name=re.compile(r"^Feature \d+ on"))
            expect(first).to_be_visible()
            top = int(re.match(r"Feature (\d+) on", first.inner_text()).group(1))
            _wait_idle(page)
            # Open another live feature: the table's second row (sorted by L1 share, so it fires too), read
            # from the grid's hidden accessible table (aria row 1 is the header; a row's first cell is the feature id).
            table = page.get_by_test_id("stDataFrame").first

            def first_cell(row: int):
                return table.locator(f"tr[aria-rowindex='{row + 1}'] td[role='gridcell']").first

            expect(first_cell(1)).to_have_text(str(top))
            chosen = int(first_cell(2).text_content())
            assert chosen != top
            feature_box = page.locator("input[aria-label^='Feature id']")
            feature_box.fill(str(chosen))
            feature_box.press("Enter")
            expect(page.get_by_role("heading", name=re.compile(rf"^Feature {chosen} on"))).to_be_visible()
            _wait_idle(page)
            expect(page.get_by_text("never fired")).to_have_count(0)   # a real dashboard, not a dead feature
            _shot(page, "03-features")

            page.get_by_role("link", name="Sessions").click()
            page.locator("input[aria-label='Title']").fill("browser test")
            page.get_by_role("button", name="Save session").click()
            saved = page.get_by_text(re.compile(r"Saved as session [0-9a-f]+"))
            expect(saved).to_be_visible()
            session_id = re.search(r"Saved as session ([0-9a-f]+)", saved.inner_text()).group(1)
            link = f"{server}/?session={session_id}"
            expect(page.get_by_text(link, exact=True).first).to_be_visible()   # a full URL to copy
            _shot(page, "04-sessions")

            # A fresh browser context (no shared state): the link alone must restore the view.
            other_context = browser.new_context(viewport={"width": 1500, "height": 2400})
            other_context.on("request", lambda request: requested.append(request.url))
            other = other_context.new_page()
            other.set_default_timeout(TIMEOUT_MS)
            other.goto(link)
            expect(other.get_by_role("heading", name=re.compile(rf"^Feature {chosen} on"))).to_be_visible()
            expect(other.get_by_text("Session: browser test")).to_be_visible()     # the banner
            _wait_idle(other)
            _shot(other, "05-reopened-features")
            other.get_by_role("link", name="Probe").click()
            expect(other.locator("textarea[aria-label='Prompt']")).to_have_value(prompt)
            expect(other.locator("span[title*=\"'wednesday'\"]").first).to_be_visible()
            _wait_idle(other)
            _shot(other, "06-reopened-probe")

            # Change the SAE set in the sidebar: the URL names the new set, and a reload keeps it.
            other.get_by_text("Sources", exact=True).click()
            other.locator("button[aria-label='Remove organism blocks.0.hook_resid_post']").first.click()
            _wait_idle(other)
            expect(other).to_have_url(re.compile(r"sae=org(:|%3A)blocks\.1\.hook_resid_post"))
            other.reload()
            expect(other.locator("textarea[aria-label='Prompt']")).to_be_visible()
            _wait_idle(other)
            expect(other.get_by_role("combobox", name="Layer (SAE site)")).to_have_value("blocks.1.hook_resid_post")
            expect(other).to_have_url(re.compile(r"sae=org(:|%3A)blocks\.1\.hook_resid_post"))
            _shot(other, "07-reloaded-sources")
        finally:
            browser.close()
        outside = sorted({url for url in requested if not url.startswith((server, "data:", "blob:", "about:"))})
        assert not outside, f"requests left the machine: {outside}"


def _shot_tall(page, name: str, height: int = 4600) -> None:
    """A screenshot of a long page: Streamlit scrolls inside its own container, so the viewport is made tall."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    _wait_idle(page)
    _shot(page, name)
    page.set_viewport_size(size)


def _click_grid_row(page, grid, row: int) -> None:
    """Click the selection cell of a data grid's row (0 = first data row): hover first, as a person does."""
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    x, y = box["x"] + 18, box["y"] + 35 + 35 * (row + 0.5)
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)


def test_feature_links_labels_contexts_and_probe(server):
    """Click a feature link and a table row, write a label, test a text; screenshots of Features and Probe."""
    from playwright.sync_api import expect, sync_playwright

    heading = re.compile(r"^Feature (\d+) on (\S+)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1500, "height": 2400}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{server}/features")
            first = page.get_by_role("heading", name=heading)
            expect(first).to_be_visible()
            _wait_idle(page)
            top = int(heading.match(first.inner_text()).group(1))
            expect(page.get_by_text("undefined, for every pair", exact=False)).to_be_visible()   # phi said, not shown
            expect(page.locator("span[title*='| activation ']").first).to_be_visible()         # every token shaded
            _shot_tall(page, "10-features")

            # a feature link (a neighbour) opens that feature, with its layer, and the URL names it
            link = page.locator("a[href*='feature=']", has_text=re.compile(r"^#\d+")).first
            target = int(re.search(r"feature=(\d+)", link.get_attribute("href")).group(1))
            assert target != top
            link.click()
            expect(page.get_by_role("heading", name=re.compile(rf"^Feature {target} on blocks\."))).to_be_visible()
            _wait_idle(page)
            assert f"feature={target}" in page.url

            # a row of the feature table opens its feature: click the row's selection cell (row 2 of the grid)
            grid = page.get_by_test_id("stDataFrame").first
            second = int(grid.locator("tr[aria-rowindex='3'] td[role='gridcell']").first.text_content())
            _click_grid_row(page, grid, 1)
            expect(page.get_by_role("heading", name=re.compile(rf"^Feature {second} on"))).to_be_visible()
            _wait_idle(page)

            # a label, searchable in the table
            page.get_by_text("Label and notes", exact=True).click()
            page.locator("input[aria-label='Label']").fill("browser label <b>x</b>")
            page.get_by_role("button", name="Save label").click()
            _wait_idle(page)
            label = page.locator("[data-testid='stMarkdownContainer'] strong", has_text="browser label <b>x</b>")
            expect(label).to_be_visible()                                     # shown as text, not as HTML
            search = page.locator("input[aria-label^='Search labels']")
            search.fill("browser label")
            search.press("Enter")
            _wait_idle(page)
            expect(page.get_by_text(re.compile(r"^1 of \d+ features match"))).to_be_visible()

            # the test box shades each token of typed text
            box = page.locator("textarea[aria-label^='Text to test the feature on']")
            box.fill("monday tuesday <script>alert(1)</script> paris")
            box.press("Control+Enter")
            _wait_idle(page)
            expect(page.locator(f"span[title*='feature {second} ']").first).to_be_visible()
            _shot_tall(page, "11-features-labelled-and-tested")

            # Probe: a long prompt's warning is one short line; L0 of TopK SAEs is explained; a table row opens
            page.get_by_role("link", name="Probe").click()
            prompt = page.locator("textarea[aria-label='Prompt']")
            prompt.fill(" ".join(["monday"] * 20 + ["tuesday"] * 1500))
            prompt.press("Control+Enter")
            _wait_idle(page)
            warning = page.get_by_text(re.compile("were cut, from"))
            expect(warning).to_be_visible()
            assert len(warning.inner_text()) < 400
            _shot(page, "12-probe-long-prompt")
            prompt.fill("on monday the king of france went to paris")
            prompt.press("Control+Enter")
            _wait_idle(page)
            page.locator("input[aria-label='Quantity']").click()
            page.get_by_role("option", name="active features (L0)").click()
            _wait_idle(page)
            expect(page.get_by_text(re.compile(r"Every token has exactly \d+ active features"))).to_be_visible()
            _shot_tall(page, "13-probe", 3200)
            grid = page.get_by_test_id("stDataFrame").first
            opened = int(grid.locator("tr[aria-rowindex='2'] td[role='gridcell']").nth(2).text_content())
            _click_grid_row(page, grid, 0)
            expect(page.get_by_role("heading", name=re.compile(rf"^Feature {opened} on"))).to_be_visible()
        finally:
            browser.close()


def test_steer_page_changes_the_completion(server):
    """Steer on the organism: the steered completion differs from the unsteered one beside it; then the
    ablation and patching figures; the Features page's "What does this feature do?" and its way to the Steer
    page (screenshots 20-24)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1500, "height": 2400}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{server}/steer")
            expect(page.get_by_role("heading", name="Steer", exact=True)).to_be_visible()
            _wait_idle(page)
            features = page.locator("input[aria-label='Features and strengths']")
            features.fill("3:40, 5:-20")
            features.press("Enter")
            _wait_idle(page)
            page.get_by_role("button", name="Steer", exact=True).click()
            _wait_idle(page)
            grid = page.get_by_test_id("stDataFrame").first
            expect(grid).to_be_visible()

            def completion(row: int) -> str:   # aria row 1 is the header; columns: steering, completion, differs
                return grid.locator(f"tr[aria-rowindex='{row + 1}'] td[role='gridcell']").nth(1).text_content()

            expect(grid.locator("tr[aria-rowindex='2'] td[role='gridcell']").first).to_have_text("unsteered")
            unsteered, steered = completion(1), completion(2)
            assert unsteered and steered and steered != unsteered
            expect(page.locator("a[href*='feature=3']").first).to_be_visible()     # the feature id is a link
            _shot(page, "20-steer")

            # the other two parts draw their figures
            page.get_by_role("tab", name="Ablation").click()
            ablated = page.locator("input[aria-label='Features to ablate']")
            ablated.fill("3, 5")
            ablated.press("Enter")
            _wait_idle(page)
            page.get_by_role("button", name="Ablate", exact=True).click()
            _wait_idle(page)
            expect(page.get_by_text("KL(clean || ablated)")).to_be_visible()
            _shot(page, "21-steer-ablation")
            page.get_by_role("tab", name="Activation patching").click()
            page.get_by_role("button", name="Patch", exact=True).click()
            _wait_idle(page)
            expect(page.locator(".js-plotly-plot").last).to_be_visible()
            _shot(page, "22-steer-patching")

            # the feature action on the Features page, and its way back to the Steer page
            page.get_by_role("link", name="Features").click()
            expect(page.get_by_role("heading", name=re.compile(r"^Feature \d+ on"))).to_be_visible()
            _wait_idle(page)
            page.get_by_role("button", name="What does this feature do?").click()
            _wait_idle(page)
            expect(page.get_by_text("Zero-ablated", exact=False)).to_be_visible()
            _shot_tall(page, "23-feature-action")
            page.get_by_role("button", name="Open on the Steer page").click()
            expect(page.get_by_role("heading", name="Steer", exact=True)).to_be_visible()
            _wait_idle(page)
            expect(page.get_by_test_id("stDataFrame").first).to_be_visible()   # its stored result, not run again
            _shot(page, "24-steer-prefilled")
        finally:
            browser.close()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    _wait_idle(page)


def test_figures_pages_and_report(server, tmp_path):
    """Screenshots of every figure issue 16 found hard to read, and of the exported report.html opened from disk
    (offline: no request leaves file://). The figures' legibility itself is unit-tested in test_figures_legibility."""
    import zipfile

    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 2400}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{server}/probe")
            box = page.locator("textarea[aria-label='Prompt']")
            box.fill("on monday the king of france went to paris")
            box.press("Control+Enter")
            _wait_idle(page)
            expect(page.get_by_text("token (position:text)").first).to_be_attached()   # the heatmap's axis title

            page.get_by_role("link", name="Geometry").click()
            expect(page.get_by_role("heading", name="Geometry")).to_be_visible()
            _wait_idle(page)
            expect(page.get_by_text(re.compile("Gemma Scope .* finds 0.24-0.48")).first).to_be_visible()
            expect(page.get_by_text(re.compile("calibrated gap of -?[0-9.]+ nats")).first).to_be_visible()
            _shot_tall(page, "30-geometry-galaxy", 3000)
            _tab(page, "Lobes")
            _shot(page, "31-geometry-lobes")
            _tab(page, "Crystals")
            _shot(page, "32-geometry-crystals")
            _tab(page, "Probes")
            _shot(page, "33-geometry-probes")

            page.get_by_role("link", name="Superposition").click()
            expect(page.get_by_role("heading", name="Superposition")).to_be_visible()
            _wait_idle(page)
            _shot_tall(page, "34-superposition", 3000)
            _tab(page, "Toy-model lab")
            page.get_by_role("button", name="Train the toy model").click()
            _wait_idle(page)
            # Training takes seconds on a quiet machine, minutes on a shared one.
            expect(page.get_by_text("Trained:", exact=False)).to_be_visible(timeout=480_000)
            _shot(page, "35-toy-lab")

            page.get_by_role("link", name="Spectra").click()
            expect(page.get_by_role("heading", name="Spectra")).to_be_visible()
            _wait_idle(page)
            _shot_tall(page, "36-spectra", 3600)

            # The report: open a feature, save the session, prepare its bundle, download it, open report.html.
            page.get_by_role("link", name="Features").click()
            expect(page.get_by_role("heading", name=re.compile(r"^Feature \d+ on"))).to_be_visible()
            _wait_idle(page)
            page.get_by_role("link", name="Sessions").click()
            page.locator("input[aria-label='Title']").fill("figures")
            page.get_by_role("button", name="Save session").click()
            expect(page.get_by_text(re.compile(r"Saved as session [0-9a-f]+"))).to_be_visible()
            _wait_idle(page)
            page.get_by_role("button", name="Prepare bundle").click()
            _wait_idle(page)
            with page.expect_download() as download:
                page.get_by_role("button", name=re.compile("Download bundle")).click()
            bundle = tmp_path / "bundle.zip"
            download.value.save_as(bundle)
            report = tmp_path / "report.html"
            report.write_bytes(zipfile.ZipFile(bundle).read("report.html"))

            offline = browser.new_context(viewport={"width": 1300, "height": 3600})
            requested: list[str] = []
            offline.on("request", lambda request: requested.append(request.url))
            view = offline.new_page()
            view.goto(report.as_uri())
            expect(view.locator(".plotly-graph-div")).to_have_count(3)       # heatmap, map, histogram
            expect(view.get_by_text("log10 density").first).to_be_attached()  # the map is coloured by density
            view.wait_for_timeout(1500)
            view.screenshot(path=str(ARTIFACTS / "37-report.png"), full_page=True)
            assert not [url for url in requested if not url.startswith(("file:", "data:", "blob:", "about:"))]
        finally:
            browser.close()


_cpu_seconds = cpu_seconds
# What each page shows once its real content is there (bench.browser.PAGE_CONTENT), in the navigation's order.
FIRST_OPEN_PAGES = list(PAGE_CONTENT.items())
FIRST_OPEN_SANITY_MS = 600_000   # a sanity bound only: the figures are printed, never asserted


def test_first_open_of_every_page_on_a_fresh_clone(tmp_path):
    """The committed organism on an empty ATLAS_CACHE_DIR (a fresh clone), each page visited for the first
    time in a new browser session, in the navigation's order: seconds from the request until the page's real
    content is visible, and until the page's script has finished. Printed (pytest -s) and written to
    test-artifacts/first_open.json; docs/PERFORMANCE.md has the figures."""
    from playwright.sync_api import expect, sync_playwright

    _require_browser()
    expect.set_options(timeout=FIRST_OPEN_SANITY_MS)
    figures: dict = {"pages": {}}
    began = time.perf_counter()
    with _serve(tmp_path, ATLAS_ORGANISM_DIR=None) as (base, process):
        cpu = _cpu_seconds(process.pid)
        figures["server_start_s"] = round(time.perf_counter() - began, 2)
        figures["server_start_cpu_s"] = round(cpu, 2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1500, "height": 2400})
                for url, content in FIRST_OPEN_PAGES:
                    page = context.new_page()
                    page.set_default_timeout(FIRST_OPEN_SANITY_MS)
                    load = os.getloadavg()[0]
                    start, cpu_start = time.perf_counter(), _cpu_seconds(process.pid)
                    page.goto(f"{base}/{url}" if url != "home" else base)
                    expect(content(page)).to_be_visible()
                    visible, cpu_visible = time.perf_counter() - start, _cpu_seconds(process.pid) - cpu_start
                    _wait_idle(page)
                    idle, cpu_idle = time.perf_counter() - start, _cpu_seconds(process.pid) - cpu_start
                    figures["pages"][url] = {"content_visible_s": round(visible, 2), "script_done_s": round(idle, 2),
                                             "server_cpu_to_content_s": round(cpu_visible, 2),
                                             "server_cpu_to_done_s": round(cpu_idle, 2), "load_average": load}
                    expect(page.get_by_text("Atlas hit an unexpected problem", exact=False)).to_have_count(0)
                    _shot(page, f"first-open-{url}")
                    page.close()
            finally:
                browser.close()
    figures["cache"] = "fresh ATLAS_CACHE_DIR, committed organism, seeded from assets/prebuilt/organism.zip"
    figures["load_average"] = list(os.getloadavg())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "first_open.json").write_text(json.dumps(figures, indent=2))
    print(f"\nfirst open (server started in {figures['server_start_s']} s; load average {os.getloadavg()[0]:.1f}):")
    for url, row in figures["pages"].items():
        print(f"  {url:14s} content visible {row['content_visible_s']:6.2f} s (server CPU "
              f"{row['server_cpu_to_content_s']:5.2f} s)   script done {row['script_done_s']:6.2f} s (server CPU "
              f"{row['server_cpu_to_done_s']:5.2f} s)   load {row['load_average']:.1f}")


def test_geometry_with_an_uploaded_concept_set(server):
    """Upload a concept set on the Geometry page: it is validated, saved, chosen in the Circles tab and read
    (what the model read is listed); screenshot of the tab."""
    import json

    from playwright.sync_api import expect, sync_playwright

    days = {"format": "atlas-concepts", "version": 1, "name": "my_days", "kind": "cyclic",
            "items": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1500, "height": 2400}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{server}/geometry")
            # the first run harvests the organism and reads every tab's sets: minutes on a loaded machine
            expect(page.get_by_role("heading", name="Geometry", exact=True)).to_be_visible(timeout=6 * TIMEOUT_MS)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                   timeout=6 * TIMEOUT_MS)
            page.get_by_text("Your own concept set", exact=False).first.click()
            page.locator("input[type='file']").first.set_input_files(
                files=[{"name": "my_days.json", "mimeType": "application/json", "buffer": json.dumps(days).encode()}])
            _wait_idle(page)
            page.get_by_role("button", name="Add this set").click()
            _wait_idle(page)
            expect(page.get_by_text("Added 'my_days'", exact=False)).to_be_visible()
            page.get_by_role("tab", name="Circles").click()
            _wait_idle(page)
            expect(page.locator("text=upload: my_days >> visible=true").first).to_be_visible()
            expect(page.locator("text=What the model read >> visible=true").first).to_be_visible()   # the Circles tab's
            expect(page.locator(".gtitle", has_text="my_days: circle strength").first).to_be_visible()
            _shot_tall(page, "40-geometry-uploaded-set")
        finally:
            browser.close()
