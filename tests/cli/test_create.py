"""``nbllm create`` as a user runs it: Modelfiles, uploads, conversion, quantization, and the round trip
through ``nbllm show --modelfile``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbllm.client import Client
from nbllm.schema import GenerateRequest
from nbllm.server import BackgroundServer
from tests.cli.support import clean_env, nbllm
from tests.support.hf_models import make_hf_model, write_lora_gguf

MODELFILE = '''# a tiny qwen2, converted on the server
FROM ./qwen
PARAMETER temperature 0
PARAMETER num_predict 6
PARAMETER stop <|im_end|>
PARAMETER stop "<|endoftext|>"
SYSTEM """You are small.
Very small."""
MESSAGE user Who are you?
MESSAGE assistant """A tiny model."""
LICENSE """Apache 2.0"""
'''


def remove(client: Client, *names: str) -> None:
    """Unload and delete models, leaving the shared server as the other tests expect it."""
    for name in names:
        for _ in client.generate(GenerateRequest(model=name, keep_alive=0)):
            pass
        client.delete(name)


@pytest.fixture
def host(live_server: BackgroundServer) -> dict[str, str]:
    return {"OLLAMA_HOST": live_server.url}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_hf_model(tmp_path / "qwen", "qwen2", hidden=256, ffn=512)
    (tmp_path / "Modelfile").write_text(MODELFILE)
    return tmp_path


def test_create_quantize_run_and_round_trip(host: dict[str, str], workdir: Path, live_server: BackgroundServer) -> None:
    result = nbllm("create", "cli-qwen", "-f", str(workdir / "Modelfile"), "-q", "q8_0", env=host)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "gathering model components"
    copied = [line for line in lines if line.startswith("copying file sha256:")]
    assert len(copied) == 5 and all(line.endswith(" 100%") for line in copied)  # weights, 3 json, tokenizer
    assert "converting model" in lines and "verifying conversion" in lines
    assert re.search(r"^quantizing F16 model to Q8_0\.\.\. 100% ▕█+▏ +\d+(\.\d+)? MB$", result.stderr, re.M)
    assert lines[-2:] == ["writing manifest", "success"]

    run = nbllm("run", "cli-qwen", "hello", env=host)
    assert run.returncode == 0, run.stderr

    shown = nbllm("show", "cli-qwen", "--modelfile", env=host).stdout
    assert 'SYSTEM """You are small.\nVery small."""' in shown and "PARAMETER stop <|endoftext|>" in shown
    (workdir / "Modelfile.copy").write_text(shown)
    again = nbllm("create", "cli-qwen-copy", "-f", str(workdir / "Modelfile.copy"), env=host)
    assert again.returncode == 0, again.stderr
    assert "parsing GGUF" in again.stderr and "converting model" not in again.stderr
    with Client(live_server.url) as client:
        a, b = client.show("cli-qwen"), client.show("cli-qwen-copy")
        assert (a.system, a.parameters, a.license, a.messages, a.template) == (
            b.system,
            b.parameters,
            b.license,
            b.messages,
            b.template,
        )
        assert a.details == b.details.model_copy(update={"parent_model": a.details.parent_model})
        digests = {m.name: m.digest for m in client.list_models().models}
        remove(client, "cli-qwen", "cli-qwen-copy")
    assert digests["cli-qwen:latest"] == digests["cli-qwen-copy:latest"]  # the very same manifest


def test_adapter_in_a_modelfile(host: dict[str, str], tmp_path: Path, live_server: BackgroundServer) -> None:
    import numpy as np

    from nbllm.store.convert import convert_model

    gguf = convert_model(make_hf_model(tmp_path / "hf", "llama"), tmp_path / "base.gguf").path
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 128)).astype(np.float32), rng.standard_normal((64, 2)).astype(np.float32)
    write_lora_gguf(tmp_path / "lora.gguf", "llama", {"blk.0.ffn_down.weight": (a, b)}, alpha=2.0)
    (tmp_path / "Modelfile").write_text("FROM ./base.gguf\nADAPTER ./lora.gguf\nPARAMETER num_predict 4\n")
    result = nbllm("create", "cli-lora", "-f", str(tmp_path / "Modelfile"), env=host)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("parsing GGUF") == 2
    shown = nbllm("show", "cli-lora", "--modelfile", env=host).stdout
    assert re.search(r"^ADAPTER /.+/blobs/sha256-[0-9a-f]{64}$", shown, re.M)
    assert nbllm("run", "cli-lora", "hi", env=host).returncode == 0
    with Client(live_server.url) as client:
        remove(client, "cli-lora")
    assert gguf.is_file()


def test_in_process_without_a_server(tmp_path: Path) -> None:
    make_hf_model(tmp_path / "model" / "llama", "llama")
    env = {"OLLAMA_MODELS": str(tmp_path / "store"), "NBLLM_HOME": str(tmp_path / "home")}
    # no Modelfile: like Ollama, the model in the current directory is used ("FROM .")
    result = subprocess.run(
        [sys.executable, "-m", "nbllm", "create", "here"],
        cwd=tmp_path / "model" / "llama",
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "success"
    listing = nbllm("list", env=env).stdout
    assert re.search(r"^here:latest\s+[0-9a-f]{12}\s+\d+(\.\d+)? [KM]B", listing, re.M), listing
    show = nbllm("show", "here", env=env).stdout
    assert re.search(r"^\s+architecture\s+llama$", show, re.M) and re.search(r"^\s+quantization\s+F16$", show, re.M)


@pytest.mark.parametrize(
    ("modelfile", "message"),
    [
        ("PARAMETER temperature 1\n", "Error: no FROM line"),
        ("FROM x\nPARAMETER nonsense 1\n", "Error: unknown parameter 'nonsense'"),
        ("FROM x\nBOGUS y\n", 'Error: (line 2): command must be one of "from", "license"'),
        ("FROM x\nMESSAGE bot hi\n", 'Error: (line 2): message role must be one of "system", "user", or "assistant"'),
        ("FROM no-such-model\n", "Error: model 'no-such-model' not found"),
        ("FROM ./weights.gguf\nADAPTER ./nope.gguf\n", "Error: ADAPTER ./nope.gguf: no such file or directory"),
    ],
)
def test_errors(host: dict[str, str], tmp_path: Path, modelfile: str, message: str) -> None:
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    (tmp_path / "Modelfile").write_text(modelfile)
    result = nbllm("create", "broken", "-f", str(tmp_path / "Modelfile"), env=host)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "copying file" not in result.stderr  # nothing was uploaded for a Modelfile that cannot work


def test_missing_modelfile_and_deprecated_parameter(host: dict[str, str], tmp_path: Path) -> None:
    result = nbllm("create", "x", "-f", str(tmp_path / "absent"), env=host)
    assert result.returncode == 1 and "Error: specified Modelfile wasn't found" in result.stderr
    (tmp_path / "Modelfile").write_text("FROM smollm2:135m\nPARAMETER mirostat 2\n")
    result = nbllm("create", "cli-deprecated", "-f", str(tmp_path / "Modelfile"), env=host)
    assert result.returncode == 0 and "warning: parameter mirostat is deprecated" in result.stdout
    assert nbllm("rm", "cli-deprecated", env=host).returncode == 0
