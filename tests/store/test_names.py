"""Model names: defaults, display forms, and names that could escape the store."""

from __future__ import annotations

import pytest

from nbllm.errors import InvalidModelName
from nbllm.store import ModelName


@pytest.mark.parametrize(
    ("text", "full", "display"),
    [
        ("smollm2", "registry.ollama.ai/library/smollm2:latest", "smollm2:latest"),
        ("smollm2:135m", "registry.ollama.ai/library/smollm2:135m", "smollm2:135m"),
        ("me/m:v1", "registry.ollama.ai/me/m:v1", "me/m:v1"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        ),
        ("localhost:5000/me/m", "localhost:5000/me/m:latest", "localhost:5000/me/m:latest"),
        ("glm4:9b", "registry.ollama.ai/library/glm4:9b", "glm4:9b"),
    ],
)
def test_parse(text: str, full: str, display: str) -> None:
    name = ModelName.parse(text)
    assert name.full == full
    assert name.display == display


@pytest.mark.parametrize(
    "text",
    [
        "",
        "..",
        "../x",
        "a/../b",
        "/etc/passwd",
        "a/b/c/d",
        "m:",
        ":tag",
        "m:t/x",
        "a b",
        "m\x00",
        "-x",
        ".hidden",
        "ns/.x",
        "m:..",
        "x" * 81,
        "c:\\windows",
        "a//b",
        "ns/m/",
        "~/m",
    ],
)
def test_invalid_names_are_rejected(text: str) -> None:
    with pytest.raises(InvalidModelName):
        ModelName.parse(text)


def test_case_insensitive_key() -> None:
    assert ModelName.parse("SmolLM2:135M").key() == ModelName.parse("smollm2:135m").key()
