"""Driving the real dashboard in headless Chromium: shared by `python -m bench pages` and tests/test_browser.py.

`serve(...)` starts `streamlit run app/main.py` on a free port with its own ATLAS_HOME / ATLAS_CACHE_DIR and yields
the base URL once /_stcore/health answers; `wait_idle(page)` waits until Streamlit's "running" status widget is
gone (the page's script finished); `cpu_seconds(pid)` is a process's CPU time (what a page cost the server,
whatever the load). Playwright drives Debian's /usr/bin/chromium (`launch(playwright)`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


def browser_missing() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(home: Path, cache: Path, log_path: Path, start_timeout: float = 60,
          **env_changes: str | None) -> Iterator[tuple[str, subprocess.Popen]]:
    """The real server on a free port with ATLAS_HOME=`home`, ATLAS_CACHE_DIR=`cache` and `env_changes` (None
    removes a variable); yields (base URL, process) once /_stcore/health answers. The log goes to `log_path`."""
    port = free_port()
    env = {**os.environ, "ATLAS_HOME": str(home), "ATLAS_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever an editable install points at
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + start_timeout
            while True:
                try:
                    if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("the Streamlit server did not start:\n" + Path(log_path).read_text())
                time.sleep(0.5)
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)


def wait_idle(page: Any, timeout_ms: float = 120_000) -> None:
    """Until the page's script finished: Streamlit shows a "running" status widget while the script runs."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc): what a page cost the server whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def browser_cpu_seconds(server_pid: int) -> dict[int, float]:
    """CPU seconds of each of this process's descendants except the server's tree: the browser (Playwright's driver
    and Chromium's processes: parsing, layout, software WebGL), which the server's CPU does not count. By pid:
    `cpu_since(before, after)` is what they spent between two readings (processes that ended in between drop out)."""
    import psutil

    out = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid == server_pid or server_pid in {p.pid for p in child.parents()}:
                continue
            times = child.cpu_times()
            out[child.pid] = times.user + times.system
        except psutil.Error:
            continue
    return out


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `browser_cpu_seconds` readings by the processes alive at the second."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# What each page shows once its real content is there (not a status box): a heading or text that only the
# finished view draws, and for the analysis pages their figures.
PAGE_CONTENT: dict[str, Callable[[Any], Any]] = {
    "home": lambda page: page.get_by_role("heading", name="Where each piece came from"),
    "probe": lambda page: page.get_by_text("Logit lens", exact=False).first,
    "features": lambda page: page.get_by_role("heading", name=re.compile(r"^Feature \d+ on")),
    "geometry": lambda page: page.locator(".js-plotly-plot").first,   # the decoder-cloud alpha per layer
    "superposition": lambda page: page.get_by_text("Mean-squared |cos| between directions", exact=False),
    "spectra": lambda page: page.get_by_text("Phases: warmup", exact=False),
    "steer": lambda page: page.locator("input[aria-label='Features and strengths']"),
    "sessions": lambda page: page.get_by_role("button", name="Save session"),
}
UNEXPECTED_TEXT = "Atlas hit an unexpected problem"
