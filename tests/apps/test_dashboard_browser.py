"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright's Python
package. The app is served by `streamlit run` on 127.0.0.1 (a free port) over fixture runs made
by the harness's own producers; every page must draw its plotly chart and show no exception.
A screenshot of each page is saved under $HARNESS_TEST_ARTIFACTS (default ./test-artifacts)/dashboard.

Needs .ci/install_browser.sh (chromium + the playwright package). Marked slow."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from apps.cli.app import app_env, streamlit_command
from tests.apps.fixtures import make_fixtures

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_TIMEOUT_MS = 150_000  # a page's first visit loads a tiny model on a shared 2-core machine

pytestmark = pytest.mark.slow


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("HARNESS_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer {url}/_stcore/health within {timeout:.0f}s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # `make test` installs both (the `browser` target); a missing one is a broken set-up, not a skip.
    assert Path(CHROMIUM).exists(), "chromium is not installed; run `make browser` (.ci/install_browser.sh)"
    import playwright  # noqa: F401  (installed by the same step)
    fx = make_fixtures(tmp_path_factory.mktemp("browser"))
    port = free_port()
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w")
    env = app_env(str(fx.runs))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=os.environ.get("HARNESS_TEST_THREADS", "2"))
    proc = subprocess.Popen(streamlit_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, fx
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def pages(fx) -> list[tuple[str, str, dict]]:
    """(screenshot name, url path, query) for every page, with inputs that make it draw a chart."""
    return [
        ("runs", "/", {"run": fx.names["demo"]}),
        ("evaluation", "/evaluation", {}),
        ("activations", "/activations", {"model": str(fx.base)}),
        ("features", "/features", {}),
        ("circuits", "/circuits", {"model": str(fx.base)}),
        ("model_diff", "/model_diff", {"model_a": str(fx.base), "model_b": str(fx.aligned)}),
        ("probes", "/probes", {}),
    ]


def test_every_page_draws_its_chart_in_chromium(server):
    from playwright.sync_api import sync_playwright

    url, fx = server
    out = artifacts_dir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            for name, path, query in pages(fx):
                target = url + path + ("?" + urllib.parse.urlencode(query) if query else "")
                page.goto(target, timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector("div.js-plotly-plot", timeout=PAGE_TIMEOUT_MS)
                # (a tall viewport: Streamlit scrolls inside its own container, so full_page alone is not enough)
                # let the script finish (the status widget shows while it runs), then look
                page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                       timeout=PAGE_TIMEOUT_MS)
                page.wait_for_timeout(1500)  # plotly finishes drawing
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                assert page.locator("[data-testid='stException']").count() == 0, name
                body = page.inner_text("body")
                assert "Traceback" not in body, name
                if name == "runs":
                    assert "cannot be read" in body and "broken-run" in body
        finally:
            browser.close()
    assert sorted(p.name for p in out.glob("*.png")) >= sorted(f"{n}.png" for n, _, _ in pages(fx))
