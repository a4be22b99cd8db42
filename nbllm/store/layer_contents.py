"""What the small layers of a model must hold, checked where a layer enters the store and by ``verify``.

The store reads a model's small layers (params, messages, template, system, license and the config
blob) on every listing and request. A layer that is not what its media type says -- params that are
not a JSON object, messages that are not a list of ``{"role", "content"}`` objects, text that is not
UTF-8, a "text" layer of gigabytes -- is refused where it would enter the store (a manifest pushed to
``PUT /v2/.../manifests/...``, a pull from a registry), reported by ``nbllm verify``, and, when one
is found in a store anyway (an older nbllm, another tool), read as empty with a warning so that
listings go on and the model can still be removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from nbllm.errors import TemplateError
from nbllm.store.manifests import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_PARAMS,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Manifest,
)

__all__ = [
    "MAX_SMALL_LAYER",
    "SMALL_LAYERS",
    "TemplateCheck",
    "layer_label",
    "layer_problem",
    "manifest_problems",
    "parse_messages",
    "parse_params",
]

MAX_SMALL_LAYER = 16 << 20
"""The most bytes a text or JSON layer may have (real ones are a few kB; a license perhaps 100 kB)."""

SMALL_LAYERS = frozenset(
    {MEDIA_CONFIG, MEDIA_PARAMS, MEDIA_MESSAGES, MEDIA_TEMPLATE, MEDIA_PROMPT, MEDIA_SYSTEM, MEDIA_LICENSE}
)
"""Media types whose content the store reads, and so checks."""

TemplateCheck = Callable[[str], None]
"""Raises TemplateError unless a template's text parses and renders (``nbllm.prompt.template_check``'s
``check_template``; the store does not import the prompt package, so callers pass it in)."""

_LABELS = {MEDIA_CONFIG: "config", MEDIA_PROMPT: "template"}


def layer_label(media_type: str) -> str:
    """The short name of a media type, as messages use it.

    >>> layer_label("application/vnd.ollama.image.params"), layer_label(MEDIA_CONFIG)
    ('params', 'config')
    """
    return _LABELS.get(media_type, media_type.rsplit(".", 1)[-1])


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None


def _json(data: bytes) -> Any:
    try:
        return json.loads(_text(data))
    except json.JSONDecodeError:
        raise ValueError("it is not JSON") from None


def parse_params(data: bytes) -> dict[str, Any]:
    """A params layer: a JSON object of option names to values; ValueError saying what is wrong.

    >>> parse_params(b'{"stop": ["<|im_end|>"]}')
    {'stop': ['<|im_end|>']}
    >>> parse_params(b"[1, 2]")
    Traceback (most recent call last):
    ...
    ValueError: it is a JSON array, not an object
    """
    value = _json(data)
    if not isinstance(value, dict):
        raise ValueError(f"it is a JSON {_kind(value)}, not an object")
    return value


def parse_messages(data: bytes) -> list[dict[str, Any]]:
    """A messages layer: a JSON array of objects with string ``role`` and ``content``; ValueError if not.

    >>> parse_messages(b'[{"role": "user", "content": "hi"}]')
    [{'role': 'user', 'content': 'hi'}]
    >>> parse_messages(b"5")
    Traceback (most recent call last):
    ...
    ValueError: it is a JSON number, not an array
    """
    value = _json(data)
    if not isinstance(value, list):
        raise ValueError(f"it is a JSON {_kind(value)}, not an array")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"message {i} is a JSON {_kind(message)}, not an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise ValueError(f'message {i} has no string "{key}"')
    return value


def _kind(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "boolean" if value is not None else "null"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}[type(value)]


def _check_template(data: bytes, check_template: TemplateCheck) -> None:
    try:
        check_template(_text(data))
    except TemplateError as exc:
        raise ValueError(f"the template does not work: {exc.message}") from None


def layer_problem(media_type: str, data: bytes, *, check_template: TemplateCheck | None = None) -> str | None:
    """What is wrong with a small layer's bytes (None when they are what the media type says).

    Templates are checked for UTF-8 only, unless ``check_template`` is given to parse and render them once
    with sample values as well (``verify`` does; a pull does not refuse a model for nbllm's template gaps).

    >>> layer_problem(MEDIA_PARAMS, b"not json")
    'the params layer is not valid: it is not JSON'
    >>> layer_problem(MEDIA_SYSTEM, b"You are helpful.") is None
    True
    """
    if media_type not in SMALL_LAYERS:
        return None
    try:
        if len(data) > MAX_SMALL_LAYER:
            raise ValueError(
                f"it has {len(data)} bytes, more than {MAX_SMALL_LAYER} a {layer_label(media_type)} layer may"
            )
        if media_type == MEDIA_PARAMS:
            parse_params(data)
        elif media_type == MEDIA_MESSAGES:
            parse_messages(data)
        elif media_type == MEDIA_CONFIG:
            if not isinstance(_json(data), dict):
                raise ValueError("it is not a JSON object")
        elif check_template is not None and media_type in (MEDIA_TEMPLATE, MEDIA_PROMPT):
            _check_template(data, check_template)
        else:
            _text(data)
    except ValueError as exc:
        return f"the {layer_label(media_type)} layer is not valid: {exc}"
    return None


def manifest_problems(manifest: Manifest, read: Callable[[str], bytes]) -> list[str]:
    """What is wrong with the small layers of a manifest; ``read(digest)`` gives a present blob's bytes.

    The config blob is checked as a config whatever its media type; a layer whose stated size is over
    the limit is refused without reading it.
    """
    problems = []
    layers = [(MEDIA_CONFIG, manifest.config), *((layer.mediaType, layer) for layer in manifest.layers)]
    for media_type, layer in layers:
        if media_type not in SMALL_LAYERS:
            continue
        if layer.size > MAX_SMALL_LAYER:
            problems.append(f"the {layer_label(media_type)} layer {layer.digest} is too large ({layer.size} bytes)")
            continue
        problem = layer_problem(media_type, read(layer.digest))
        if problem is not None:
            problems.append(f"{problem} ({layer.digest})")
    return problems
