"""Settings from the environment: OLLAMA_* names, NBLLM_* precedence, defaults, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nbllm.config import Settings, parse_host
from nbllm.errors import ConfigError

SEED_VARIABLES = {
    "OLLAMA_DEBUG": ("1", "debug", 1),
    "OLLAMA_HOST": ("0.0.0.0:11434", "host", parse_host("0.0.0.0:11434")),
    "OLLAMA_KEEP_ALIVE": ("10m", "keep_alive", 600.0),
    "OLLAMA_MAX_LOADED_MODELS": ("2", "max_loaded_models", 2),
    "OLLAMA_MAX_QUEUE": ("7", "max_queue", 7),
    "OLLAMA_MODELS": ("/data/LLM/ollama/models", "models", Path("/data/LLM/ollama/models")),
    "OLLAMA_NUM_PARALLEL": ("3", "num_parallel", 3),
    "OLLAMA_NOPRUNE": ("true", "noprune", True),
    "OLLAMA_ORIGINS": ("http://a.com, chrome-extension://*", "origins", ("http://a.com", "chrome-extension://*")),
    "OLLAMA_SCHED_SPREAD": ("1", "sched_spread", True),
    "OLLAMA_TMPDIR": ("/tmp/x", "tmpdir", Path("/tmp/x")),
    "OLLAMA_FLASH_ATTENTION": ("1", "flash_attention", True),
    "OLLAMA_LLM_LIBRARY": ("cpu", "llm_library", "cpu"),
    "OLLAMA_GPU_OVERHEAD": ("1073741824", "gpu_overhead", 1 << 30),
    "OLLAMA_LOAD_TIMEOUT": ("2m", "load_timeout", 120.0),
}


def test_defaults_are_ollamas() -> None:
    s = Settings.from_env()
    assert s.host.url == "http://127.0.0.1:11434"
    assert s.keep_alive == 300.0
    assert s.max_queue == 512
    assert s.load_timeout == 300.0
    assert s.noprune is False and s.flash_attention is None
    assert s.models_dir == s.home / "models"


@pytest.mark.parametrize("var", sorted(SEED_VARIABLES))
def test_every_seed_variable_is_honoured(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, field, expected = SEED_VARIABLES[var]
    monkeypatch.setenv(var, raw)
    assert getattr(Settings.from_env(), field) == expected


def test_nbllm_name_takes_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "10m")
    monkeypatch.setenv("NBLLM_KEEP_ALIVE", "1h")
    assert Settings.from_env().keep_alive == 3600.0


@pytest.mark.parametrize(("raw", "expected"), [("-1", math.inf), ("-1m", math.inf), ("0", 0.0), ("3600", 3600.0)])
def test_keep_alive_forms(raw: str, expected: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", raw)
    assert Settings.from_env().keep_alive == expected


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("OLLAMA_KEEP_ALIVE", "soon"),
        ("OLLAMA_MAX_QUEUE", "many"),
        ("OLLAMA_NOPRUNE", "perhaps"),
        ("OLLAMA_HOST", "127.0.0.1:99999"),
        ("OLLAMA_NUM_PARALLEL", "-2"),
        ("OLLAMA_DEBUG", "7"),
    ],
)
def test_bad_values_name_the_variable(var: str, raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError) as info:
        Settings.from_env()
    assert var in str(info.value) and raw in str(info.value)


def test_bad_nbllm_value_names_the_nbllm_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBLLM_MAX_QUEUE", "lots")
    with pytest.raises(ConfigError, match="NBLLM_MAX_QUEUE"):
        Settings.from_env()


def test_settings_are_frozen() -> None:
    s = Settings.from_env()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        s.max_queue = 3  # type: ignore[misc]
    assert s.model_copy(update={"max_queue": 3}).max_queue == 3
