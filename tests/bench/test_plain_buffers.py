"""bench/plain_buffers.py: llama-cpp-python's own server, the bench's peer, started so that it runs on this CPU as
nbllm does. On a CPU with AMX (this project's machine of 2026-12-05), ``python -m llama_cpp.server`` loads the
weights into llama.cpp's AMX buffers and dies at the first matrix product; through the wrapper it answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import servers
from bench.clients import stream
from bench.env import Peer
from nbllm.engine.llama.native import amx_kernels

pytestmark = pytest.mark.model

WRAPPER = Path(servers.__file__).with_name("plain_buffers.py")


def test_llama_cpp_python_s_server_streams_a_completion_on_this_cpu(smollm2_gguf: Path, tmp_path: Path) -> None:
    peer = Peer("llama-cpp-python", Path(sys.executable))  # (the test environment has llama-cpp-python[server])
    server = servers.llama_cpp_server(peer, smollm2_gguf, n_ctx=512, threads=2, log=tmp_path / "server.log")
    try:
        timing = stream(server, "Once upon a time", 8, ctx=512)
        assert server.proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
    finally:
        server.stop()
    assert timing.tokens >= 1 and timing.ttft > 0


def test_the_wrapper_changes_the_model_parameters_exactly_where_llama_cpp_has_amx_kernels() -> None:
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import plain_buffers as p, llama_cpp.llama_cpp as C; "
        "changed = p.plain_buffers(); print(changed, C.llama_model_default_params().use_extra_bufts)"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(WRAPPER.parent)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == (["True", "False"] if amx_kernels() else ["False", "True"])


def test_the_wrapper_wants_a_module_to_run() -> None:
    out = subprocess.run([sys.executable, str(WRAPPER), "llama_cpp.server"], capture_output=True, text=True)
    assert out.returncode != 0 and "usage: python plain_buffers.py -m MODULE" in out.stderr
