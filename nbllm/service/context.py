"""A prompt's tokens within the context: tokenizing a rendered prompt, truncating it, and dropping a
conversation's oldest turns until it fits."""

from __future__ import annotations

from typing import Any

from nbllm.engine import Engine
from nbllm.errors import ContextLengthExceeded
from nbllm.prompt.thinking import ThinkValue
from nbllm.service.prompts import ModelTemplate

__all__ = ["chat_tokens", "fit", "prompt_tokens"]


def prompt_tokens(engine: Engine, text: str) -> list[int]:
    """Tokenize a rendered prompt; don't add a BOS token the template already wrote."""
    bos = engine.info.bos_text
    return engine.tokenize(text, add_special=not (bos and text.startswith(bos)), parse_special=True)


def fit(tokens: list[int], engine: Engine, *, truncate: bool | None) -> list[int]:
    """The tokens, or their start and most recent half when they do not fit (unless truncate is False)."""
    n_ctx = engine.info.n_ctx
    if len(tokens) < n_ctx:
        return tokens
    if truncate is False:
        raise ContextLengthExceeded(len(tokens), n_ctx)
    keep = n_ctx // 2  # keep the start (instructions) and the most recent half, as llama-server does
    return tokens[:4] + tokens[len(tokens) - (keep - 4) :]


def chat_tokens(
    engine: Engine,
    template: ModelTemplate,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    think: ThinkValue,
    truncate: bool | None,
) -> tuple[str, list[int]]:
    """Render and tokenize; if too long, drop the oldest turns (never system messages or the last one).

    The fewest turns that make it fit are found by bisection, so a request of thousands of messages
    renders the prompt O(log n) times, not once per dropped turn (that was quadratic: 8,000 messages
    kept a worker busy for minutes)."""
    n_ctx = engine.info.n_ctx

    def render(drop: int) -> tuple[str, list[int]]:
        gone = set(droppable[:drop])
        text = template.chat([m for i, m in enumerate(messages) if i not in gone], tools, think=think)
        return text, prompt_tokens(engine, text)

    droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
    text, tokens = render(0)
    if len(tokens) < n_ctx:
        return text, tokens
    if truncate is False:
        raise ContextLengthExceeded(len(tokens), n_ctx)
    text, tokens = render(len(droppable))
    if len(tokens) >= n_ctx:
        return text, fit(tokens, engine, truncate=truncate)
    low, high = 0, len(droppable)  # render(low) does not fit, render(high) does
    best = (text, tokens)
    while high - low > 1:
        mid = (low + high) // 2
        attempt = render(mid)
        if len(attempt[1]) < n_ctx:
            high, best = mid, attempt
        else:
            low = mid
    return best
