"""Short, readable names for benchmark targets (legends, frames), the full URL kept beside them.

A target's name is the profile it came from if it has one, ``local`` for this process's engine,
else ``host:port`` of its URL (scheme and path dropped); the API kind is put in front
(``openai host:port``) only where two targets would otherwise share a name, and the full URL where
even that is not enough.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from nbllm.backends import LOCAL, BackendError, parse_backend_url

__all__ = ["target_names"]


def _parts(url: str) -> tuple[str, str]:
    """``(kind, host:port)`` of a target URL (the URL itself if it does not parse)."""
    try:
        parsed = parse_backend_url(url)
    except BackendError:
        return "", url
    return parsed.kind, urlsplit(parsed.base).netloc or parsed.base


def target_names(targets: Sequence[str], given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each target URL's short name (``given``: names the caller knows, e.g. profiles').

    >>> target_names(["local", "openai+http://127.0.0.1:8080/v1", "http://gpu2:11434"])
    {'local': 'local', 'openai+http://127.0.0.1:8080/v1': '127.0.0.1:8080', 'http://gpu2:11434': 'gpu2:11434'}
    >>> target_names(["openai+http://h:11434/v1", "http://h:11434"])
    {'openai+http://h:11434/v1': 'openai h:11434', 'http://h:11434': 'ollama h:11434'}
    >>> target_names(["openai+http://gpu1:8000/v1"], {"openai+http://gpu1:8000/v1": "lab"})
    {'openai+http://gpu1:8000/v1': 'lab'}
    """
    given = given or {}
    parts = {t: _parts(t) for t in targets if t not in given and t.strip() != LOCAL}
    names = {t: given.get(t) or (LOCAL if t.strip() == LOCAL else parts[t][1]) for t in targets}
    for _ in range(2):  # host:port, then kind + host:port, then the URL: until every name is one target's
        taken = Counter(names[t] for t in dict.fromkeys(targets))
        clash = [t for t in parts if taken[names[t]] > 1]
        if not clash:
            break
        for t in clash:
            kind, hostport = parts[t]
            names[t] = f"{kind} {hostport}" if names[t] == hostport and kind else t
    return names
