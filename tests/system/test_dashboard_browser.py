"""The dashboard in headless Chromium, over a store written by ``obs demo``.

Needs Debian's chromium (``.ci/backends/chromium.sh`` exports ``OBS_TEST_CHROMIUM``): skipped
without it, failed under ``CI=true``. Screenshots go to ``artifacts/dashboard/``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._cdp import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
pytestmark = pytest.mark.backend("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium from ``OBS_TEST_CHROMIUM``: checked first, before the demo runs."""
    path = os.environ.get("OBS_TEST_CHROMIUM")
    if path and os.path.exists(path):
        return path
    reason = "OBS_TEST_CHROMIUM is not set: source .ci/backends/chromium.sh (Debian's chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OBS_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dashboard")
    path = directory / "obs.db"
    proc = subprocess.run(
        [sys.executable, "-m", "obs_middleware.cli", "demo", "--requests", "400",
         "--store", str(path), "--jsonl", str(directory / "demo.jsonl")],
        cwd=directory, env=clean_env(), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture(scope="module")
def dashboard(store: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "obs_middleware.cli", "dashboard", "--store", str(store),
         "--port", str(port)],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/api/meta", timeout=2) as response:
                assert json.load(response)["services"] == ["obs-demo"]
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"dashboard did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def api(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=5) as response:
        return json.load(response)


async def test_overview_traces_waterfall_and_filters_in_headless_chromium(
    chromium: str, dashboard: str
) -> None:
    overview = api(dashboard, "/api/overview")
    has_ai = api(dashboard, "/api/cost")["by_user"] != []
    async with Browser(chromium) as browser:
        await browser.navigate(dashboard + "/")
        await browser.wait_for("document.body.dataset.ready === '1'")

        # Overview: tiles and non-empty charts.
        tiles = await browser.evaluate(
            "[...document.querySelectorAll('[data-testid=tile] b')].map(e => e.textContent)"
        )
        assert tiles[0] == f"{overview['requests']:,}"
        points = await browser.evaluate(
            "document.querySelector('#chart-rate path.line').getAttribute('d').split('L').length"
        )
        assert points >= 5
        assert (
            await browser.evaluate("document.querySelectorAll('#chart-latency path.line').length")
            == 3
        )
        assert await browser.evaluate("document.querySelectorAll('#chart-jobs rect').length") >= 1
        routes = await browser.evaluate("document.querySelectorAll('#routes tbody tr').length")
        assert routes == len(overview["routes"])
        if has_ai:
            assert (
                await browser.evaluate("document.querySelectorAll('#chart-cost-user rect').length")
                > 0
            )
            assert (
                await browser.evaluate("document.querySelectorAll('#chart-cost-model rect').length")
                > 0
            )
        await browser.screenshot(ARTIFACTS / "overview.png", full_page=True)

        # A trace with nested spans: its waterfall opens on a click.
        await browser.evaluate(
            "(() => { const f = document.querySelector('#f-name'); f.value = 'POST /v1/images';"
            " f.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        await browser.wait_for(
            "[...document.querySelectorAll('#traces tbody tr[data-trace] code')]"
            ".every(c => c.textContent.startsWith('POST /v1/images'))"
            " && document.querySelectorAll('#traces tbody tr[data-trace]').length > 0"
        )
        richest = await browser.evaluate(
            "[...document.querySelectorAll('#traces tbody tr[data-trace]')]"
            ".sort((a, b) => b.children[4].textContent - a.children[4].textContent)"
            "[0].dataset.trace"
        )
        await browser.click(f'#traces tbody tr[data-trace="{richest}"]')
        await browser.wait_for("!document.querySelector('#waterfall').hidden")
        rows = await browser.wait_for(
            "[...document.querySelectorAll('#wf-rows .wf-row')].map(r =>"
            " [r.dataset.depth, r.dataset.kind, r.querySelector('.wf-name').textContent.trim()])"
        )
        assert rows[0][0] == "0" and rows[0][1] == "server"
        assert any(int(depth) >= 1 for depth, _, _ in rows), rows
        await browser.click("#wf-rows .wf-row:nth-child(2)")
        detail = await browser.evaluate("document.querySelector('#wf-detail').textContent")
        assert "name" in detail and "duration_ms" in detail
        await browser.screenshot(ARTIFACTS / "waterfall.png")
        await browser.click("#wf-close")
        await browser.wait_for("document.querySelector('#waterfall').hidden")

        # Filters: errors only, then one user.
        await browser.evaluate(
            "(() => { const f = document.querySelector('#f-name'); f.value = '';"
            " const s = document.querySelector('#f-status'); s.value = 'error';"
            " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        statuses = await browser.wait_for(
            "(() => { const rows = [...document.querySelectorAll('#traces tbody tr[data-trace]')];"
            " const bad = rows.map(r => r.children[3].classList.contains('status-error'));"
            " return rows.length && bad.every(Boolean) ? bad.length : 0; })()"
        )
        assert statuses > 0
        await browser.evaluate(
            "(() => { const s = document.querySelector('#f-status'); s.value = '';"
            " const u = document.querySelector('#f-user'); u.value = 'u-ada';"
            " u.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        users = await browser.wait_for(
            "(() => { const rows = [...document.querySelectorAll('#traces tbody tr[data-trace]')];"
            " const users = rows.map(r => r.children[2].textContent.split(' ')[0]);"
            " return rows.length && users.every(u => u === 'u-ada') ? users.length : 0; })()"
        )
        assert users > 0
        await browser.screenshot(ARTIFACTS / "filtered.png")
        assert not [line for line in browser.console if line.startswith("exception")], (
            browser.console
        )
