"""The OpenAI SDK (emulated API answering with dated snapshots, failing some calls) through the
SQLite store to ``obs report``: each model is one row, with its true error rate and cost."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import obs_middleware as obs
from obs_middleware.cli.report import figures, report
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.testing.emulators.openai import OpenAIEmulator, error_body

HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_openai.patch()
    yield
    obs_openai.unpatch()


def test_report_shows_each_openai_model_once_with_its_true_error_rate(
    tmp_path: Path, configured
) -> None:
    path = tmp_path / "obs.db"
    configured(service="svc", exporters=[SqliteExporter(path)])
    # (model, calls, failures): the emulator answers with the dated snapshot, as the API does.
    plan = [("gpt-4o-mini", 40, 10), ("gpt-4o", 8, 2)]
    with (
        OpenAIEmulator(prompt_tokens=120, completion_tokens=30) as emu,
        openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0) as client,
    ):
        for model, calls, failures in plan:
            for i in range(calls):
                if i % (calls // failures) == 0:
                    emu.fail("/chat/completions", 503, error_body("busy", "server_error"))
                with contextlib.suppress(openai.APIStatusError):
                    client.chat.completions.create(model=model, messages=HI)
    obs.shutdown(10.0)

    store = Store(path)
    rows = figures(store, Filters())["ai_by_model"]
    store.close()
    got = {
        r["model"]: (r["calls"], r["errors"], r["error_rate"], r["response_models"]) for r in rows
    }
    assert got == {
        "gpt-4o-mini": (40, 10, 0.25, ["gpt-4o-mini-2024-07-18"]),
        "gpt-4o": (8, 2, 0.25, ["gpt-4o-2024-08-06"]),
    }
    out = io.StringIO()
    report(str(path), Filters(), out)
    lines = out.getvalue().splitlines()
    mini = [line for line in lines if line.startswith("openai") and " gpt-4o-mini " in line]
    assert len(mini) == 1, lines
    assert mini[0].split()[1:6] == ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "40", "10", "25.0"]
    # 30 answered calls x $0.000036 (120 x $0.15 + 30 x $0.60 per 1M) = $0.00108, not $0.0000
    assert mini[0].endswith("$0.0011")
