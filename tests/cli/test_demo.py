"""``obs demo`` end to end in a subprocess (it configures the process-wide pipeline)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def run_obs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBS_")}
    return subprocess.run(
        [sys.executable, "-m", "obs_middleware.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_prints_samples_and_the_report_and_leaves_a_store_and_jsonl(tmp_path: Path) -> None:
    store, jsonl = tmp_path / "obs.db", tmp_path / "demo.jsonl"
    proc = run_obs(
        "demo", "--requests", "120", "--store", str(store), "--jsonl", str(jsonl), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sample traces:" in out and "└─ " in out and "POST /v1/images" in out
    for section in ("Requests by route", "Slowest queries", "AI calls by provider and model",
                    "Jobs by state", "Dropped telemetry", "obs dashboard --store"):  # fmt: skip
        assert section in out
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    servers = [r for r in records if r["type"] == "span" and r.get("span.kind") == "server"]
    assert len(servers) == 120
    assert any(r["status"] == "error" for r in servers)
    assert {r["service"] for r in records} == {"obs-demo"}
    with sqlite3.connect(store) as conn:
        (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
        models = conn.execute("SELECT DISTINCT ai_model FROM records WHERE ai_provider = 'openai'")
        openai_models = {m for (m,) in models}
    assert count == len(records)  # the store holds what the JSON lines file holds
    # One row per model asked for, failed calls included: never the dated snapshot that answered.
    assert openai_models and openai_models <= {"gpt-4o-mini", "gpt-4o", "gpt-image-1"}
