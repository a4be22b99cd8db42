"""Ollama's model options: one table of names, types, defaults and kinds (load-time or runtime).

Requests carry options as a JSON object (``options``), Modelfiles as ``PARAMETER name value`` lines
and models as a params layer. All three are parsed here, with Ollama's error messages, and merged
into one frozen :class:`Options`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from nbllm.errors import InvalidOption

__all__ = [
    "DEPRECATED_OPTIONS",
    "LOAD_TIME_OPTIONS",
    "Options",
    "parse_api_options",
    "parse_parameter",
]

log = logging.getLogger(__name__)

LOAD_TIME_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"})
"""Options that shape the loaded model; changing one reloads it."""

DEPRECATED_OPTIONS = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "numa",
        "tfs_z",
        "embedding_only",
    }
)
"""Options Ollama once had: accepted, warned about, ignored."""


@dataclass(frozen=True)
class Options:
    """Every option with Ollama's default (``num_ctx=None`` means "the server's default")."""

    num_ctx: int | None = None
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = 0
    use_mmap: bool | None = None
    num_thread: int = 0
    draft_num_predict: int = -1
    """Speculative decoding (prompt lookup, or the model's draft model): -1 = automatic, 0 = off, N = up to N
    draft tokens a step. Per request here; Ollama's is load-time and applies to draft models only."""
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = field(default=())

    def merged(self, *layers: Mapping[str, Any]) -> Options:
        """These options with each already-parsed layer applied in turn (later wins)."""
        out = self
        for layer in layers:
            if layer:
                out = replace(out, **{k: v for k, v in layer.items() if k in _TYPES})
        return out

    def load_key(self) -> tuple[Any, ...]:
        """The load-time values; a loaded model is reused only if these are equal."""
        return tuple(getattr(self, name) for name in sorted(LOAD_TIME_OPTIONS))

    def non_default(self) -> dict[str, Any]:
        """Options that differ from the defaults (for ``show`` and Modelfiles)."""
        default = Options()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }


def _kind(annotation: str) -> str:
    if "tuple" in annotation:
        return "array"
    if "bool" in annotation:
        return "boolean"
    if "float" in annotation:
        return "float32"
    return "integer"


_TYPES: dict[str, str] = {f.name: _kind(str(f.type)) for f in fields(Options)}


def parse_api_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate an API ``options`` object as Ollama's ``Options.FromMap`` does.

    Wrong JSON types are a 400 naming the option; unknown keys are ignored with a warning.

    >>> parse_api_options({"num_ctx": 4096, "temperature": 0, "stop": ["\\n"]})
    {'num_ctx': 4096, 'temperature': 0.0, 'stop': ('\\n',)}
    >>> parse_api_options({"num_ctx": 2048.0})
    {'num_ctx': 2048}
    >>> parse_api_options({"num_ctx": "big"})
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidOption: option "num_ctx" must be of type integer
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidOption("options must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _TYPES.get(key)
        if kind is None:
            if key in DEPRECATED_OPTIONS:
                log.warning("option %r is deprecated and ignored", key)
            else:
                log.warning("invalid option provided: %r", key)
            continue
        if value is None:
            continue
        out[key] = _convert_json(key, kind, value)
    return out


def _convert_json(key: str, kind: str, value: Any) -> Any:
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidOption(f'option "{key}" must be of type integer')
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidOption(f'option "{key}" must be a finite number')
        return int(value)
    if kind == "float32":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidOption(f'option "{key}" must be of type float32')
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidOption(f'option "{key}" must be of type boolean')
        return value
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidOption(f'option "{key}" must be of type array of strings')
    return tuple(value)


def parse_parameter(name: str, values: Iterable[str]) -> Any:
    """Convert a Modelfile ``PARAMETER`` (or ``/set parameter``) value from text.

    >>> parse_parameter("temperature", ["0.2"])
    0.2
    >>> parse_parameter("stop", ["<|im_end|>", "<|im_start|>"])
    ('<|im_end|>', '<|im_start|>')
    >>> parse_parameter("bogus", ["1"])
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidOption: unknown parameter 'bogus'
    """
    items = list(values)
    kind = _TYPES.get(name)
    if kind is None:
        if name in DEPRECATED_OPTIONS:
            log.warning("parameter %s is deprecated", name)
            return None
        raise InvalidOption(f"unknown parameter '{name}'")
    if kind == "array":
        return tuple(items)
    if len(items) != 1:
        raise InvalidOption(f"parameter '{name}' takes one value")
    text = items[0].strip()
    try:
        if kind == "integer":
            return int(text)
        if kind == "float32":
            return float(text)
    except ValueError:
        raise InvalidOption(f"invalid {kind} value for parameter '{name}': {text!r}") from None
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise InvalidOption(f"invalid boolean value for parameter '{name}': {text!r}")
