"""The texts the benchmark sends: deterministic, raw (no chat template), long enough to never run dry."""

from __future__ import annotations

STORY = (
    "Once upon a time, in a small harbour town at the edge of a cold northern sea, there lived an old "
    "lighthouse keeper and his granddaughter. Every evening they climbed the long spiral stairs together, and"
)

_SENTENCES = [
    "The committee reviewed the quarterly figures and found that shipping costs had risen sharply.",
    "In the forest, the oldest trees grow slowly, storing carbon in wood that can last for centuries.",
    "A well-designed cache keeps the most recently used items close at hand and evicts the rest.",
    "The river flooded twice that spring, and the farmers moved their animals to the higher fields.",
    "Mathematicians call a number prime when it has no divisors other than one and itself.",
    "The orchestra tuned to a single note from the oboe before the conductor raised her baton.",
    "Engineers measured the bridge's vibrations under load and compared them with the model.",
    "Bread rises because yeast ferments sugars and releases carbon dioxide into the dough.",
    "The library opened a new reading room with tall windows facing the quiet courtyard.",
    "Satellites in low orbit circle the planet roughly every ninety minutes.",
]


def long_prompt(n_sentences: int = 28) -> str:
    """About 500 tokens of plain prose, ending in an open sentence."""
    body = " ".join(_SENTENCES[i % len(_SENTENCES)] for i in range(n_sentences))
    return body + " Taken together, these observations suggest that"


def story(k: int) -> str:
    """A distinct story opening for client ``k`` (distinct prefixes defeat cross-request caching)."""
    return f"Story number {k}. " + STORY


CHAT_TURNS = [
    "Tell me about lighthouses.",
    "Who kept them running in the past?",
    "How did their lamps work?",
    "What replaced them?",
    "Summarise our conversation in one sentence.",
]
