"""``nbllm bench`` as a user runs it, against a loopback server that streams on a fixed schedule."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbllm.cli.bench import bench
from tests.cli.support import clean_env, nbllm
from tests.support.schedule_server import ScheduleServer


@pytest.fixture(scope="module")
def sched() -> Iterator[ScheduleServer]:
    server = ScheduleServer().start()
    yield server
    server.stop()


def test_help_documents_every_flag() -> None:
    page = nbllm("bench", "--help").stdout
    for param in bench.params:
        if param.param_type_name == "option":
            assert param.help, param.name
            assert any(opt in page for opt in param.opts), param.name
    assert page.startswith("Benchmark serving")


def test_sweep_writes_tables_vllm_json_and_plots(sched: ScheduleServer, tmp_path: Path) -> None:
    args = ["bench", "t100-g20-n4", "--host", f"openai+{sched.url}/v1", "-c", "1,2", "-n", "4", "--input-len", "11"]
    result = nbllm(*args, "--output-len", "4", "--warmup", "1", "--out", str(tmp_path), "--slo-ttft", "5000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.search(r"t100-g20-n4 .* c=1 +4 +0 ", lines[1]) and re.search(r" c=2 +4 +0 ", lines[2])
    assert (
        "TTFT/TPOT/E2EL measured by this client" in result.stdout and "server timings: none reported" in result.stdout
    )
    runs = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(runs) == 3 and len((tmp_path / "requests.csv").read_text().splitlines()) == 9
    saved = sorted(tmp_path.glob("openai-infqps-concurrency*.json"))
    assert [json.loads(p.read_text())["max_concurrency"] for p in saved] == [1, 2]
    assert len(list(tmp_path.glob("*.png"))) == 4
    # warm-up went first and is not counted: 1 + 2 * 4 streamed requests, plus the 2 calibration probes
    assert len([r for r in sched.requests if r["body"].get("stream")]) >= 9


def test_json_output_and_errors(sched: ScheduleServer) -> None:
    result = nbllm("bench", "flaky-t10-g10-n2", "--host", sched.url, "-n", "4", "--warmup", "0", "--json")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert (run["completed"], run["failed"]) == (2, 2) and run["errors"].count("HTTP 500: scheduled failure") == 2
    missing = nbllm("bench", "missing", "--host", sched.url, "-n", "2")
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith('HTTP 404: model "missing" not found')
    bad = nbllm("bench", "m", "--host", sched.url, "-c", "0")
    assert bad.returncode == 1 and "concurrency levels must be at least 1" in bad.stderr


def test_ctrl_c_prints_what_was_measured(sched: ScheduleServer) -> None:
    args = ["bench", "t20-g20-n5", "--host", sched.url, "-n", "60", "--warmup", "0", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbllm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        text=True,
    )
    deadline = time.monotonic() + 30
    while len([r for r in sched.requests if r["body"].get("model") == "t20-g20-n5" and r["body"]["stream"]]) < 4:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    row = out.splitlines()[1].split()
    assert int(row[row.index("c=1") + 1]) >= 2  # the completed requests are in the table
