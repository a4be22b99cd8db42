"""A thinking model made from SmolLM2: a template with its own thinking tags and a few worked examples.

No small thinking model ships on PyPI. SmolLM2-135M copies the examples' shape under greedy decoding
(``<think>I add 4 and 4.</think>8`` for "What is 4+4?"), so the real engine writes a reasoning
section and an answer; ``think: false`` pre-fills an empty thinking block, as Ollama's templates do.
"""

from __future__ import annotations

from nbllm.runtime import Runtime
from tests.support.models import install_model

THINKER = "smollm2-thinker:135m"
QUESTION = "What is 4+4?"


def _turn(question: str, thinking: str, answer: str) -> str:
    return (
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n<think>{thinking}</think>{answer}<|im_end|>\n"
    )


TEMPLATE = (
    _turn("What is 2+2?", "I add 2 and 2.", "4")
    + _turn("What is 3+3?", "I add 3 and 3.", "6")
    + """{{ range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if and .IsThinkSet (not .Think) }}<think></think>{{ end }}"""
)
PARAMS = {"temperature": 0, "num_predict": 24, "num_ctx": 512, "stop": ["<|im_end|>"]}


def install_thinker(rt: Runtime, base: str = "smollm2:135m") -> str:
    """Store the thinking model (once) next to ``base`` in ``rt``'s store; its name."""
    if rt.store.find(THINKER) is None:
        weights = rt.store.get(base).model_path
        assert weights is not None
        install_model(rt.store, THINKER, weights, template=TEMPLATE, params=PARAMS)
    return THINKER
