"""The benchmark harness keeps working: its quick mode runs end to end (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nbllm.runtime import Runtime


def test_quick_mode_writes_a_report(real_runtime: Runtime, tmp_path: Path) -> None:
    store = real_runtime.store.root
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-build", "--store", str(store), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = next(out.glob("*-quick.md")).read_text()
    for section in (
        "targets",
        "single-stream decode",
        "time to first token",
        "concurrent streaming clients",
        "peak RSS",
        "Cold start",
    ):
        assert section in report
    data = json.loads(next(out.glob("*-quick.json")).read_text())
    smol = data["models"]["smollm2:135m"]
    assert smol["raw"]["decode_rates"][0] > 0 and smol["decode"]["nbllm (np=4)"]["rates"][0] > 0
    assert smol["multiturn"]["cached_tokens"] < smol["multiturn"]["cold_tokens"]
    assert set(smol["concurrency"]["nbllm (np=4)"]) == {"1", "2"}
    assert smol["concurrency"]["nbllm (np=4)"]["2"]["decode"][0] > 0  # decode-only, as llama-batched-bench counts
    assert set(smol["engine"]["aggregate"]) == {"1", "2"} and smol["engine"]["decode"]["2"][0] > 0
    assert len(smol["ttft"]["nbllm (np=4)"]["server_prefill"]) == len(smol["ttft"]["nbllm (np=4)"]["ttft"])
    assert "nbllm engine in-process" in report and "over its own prefill" in report
    assert next(out.glob("*-quick-smollm2_135m.png")).stat().st_size > 1000
