"""Named host profiles: ``--host lab`` for ``openai+http://gpu1:8000/v1`` with its key in ``LAB_KEY``.

One parser for every place that names hosts: the magics' config (``c.NbllmMagics.hosts``, a dict)
and ``hosts.ini`` in nbllm's home (read by ``nbllm bench`` and the magics alike; INI, read by the
standard library's configparser, as Python 3.10 has no TOML reader)::

    [lab]
    url = openai+http://gpu1:8000/v1
    api_key_env = LAB_KEY

    [gpu2]
    url = http://gpu2:11434

A profile names the environment variable that holds its key, never the key: a profile with an
``api_key`` (or any other unknown field) is refused.

The rule: a bare word given as ``--host`` is the profile of that name if there is one, else read
as Ollama reads it (``gpu2`` is ``http://gpu2:11434``); ``local`` is this process, and
``OLLAMA_HOST`` is always read the Ollama way, never as a profile.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbllm.backends.base import BackendError
from nbllm.backends.url import parse_backend_url

__all__ = [
    "PROFILES_FILE",
    "HostProfile",
    "is_profile_name",
    "load_profiles",
    "no_profile_note",
    "parse_profiles",
    "resolve_host",
]

PROFILES_FILE = "hosts.ini"
"""The profiles file's name in nbllm's home (``NBLLM_HOME``, ``~/.nbllm`` by default)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NOT_PROFILES = ("local", "localhost")
_FIELDS = ("url", "api_key_env")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class HostProfile:
    """A named backend: its URL and the variable that holds its API key (the key itself is never kept)."""

    name: str
    url: str
    api_key_env: str | None = None


def is_profile_name(value: str) -> bool:
    """Whether ``value`` is a profile's name rather than a URL, ``host:port`` or ``local``.

    >>> [is_profile_name(v) for v in ("lab", "gpu-2", "local", "localhost", "gpu1:11434", "http://x")]
    [True, True, False, False, False, False]
    """
    text = value.strip()
    return bool(_NAME.fullmatch(text)) and text.lower() not in _NOT_PROFILES


def _profile(name: str, value: Any, where: str) -> HostProfile:
    if not is_profile_name(name):
        raise BackendError(f"{where}: {name!r} cannot name a host profile (letters, digits, '-', '_'; not 'local')")
    entry: Mapping[str, Any] = {"url": value} if isinstance(value, str) else value
    if not isinstance(entry, Mapping):
        raise BackendError(f"{where}: profile {name!r} must be a URL or a table with url and api_key_env")
    unknown = sorted(str(k) for k in entry if k not in _FIELDS)
    if unknown:  # never echo the values: one of them may be a key
        hint = (
            " (name the variable holding the key with api_key_env; keys are never stored)"
            if any("key" in k for k in unknown)
            else ""
        )
        raise BackendError(f"{where}: profile {name!r} has unknown field(s) {', '.join(unknown)}{hint}")
    url, key_env = entry.get("url"), entry.get("api_key_env")
    if not isinstance(url, str) or not url.strip():
        raise BackendError(f"{where}: profile {name!r} needs a url, e.g. openai+http://host:8000/v1")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env)):
        raise BackendError(f"{where}: profile {name!r}: api_key_env must name an environment variable")
    parse_backend_url(url)  # a wrong URL fails here, naming the profile's source
    return HostProfile(name, url.strip(), key_env)


def parse_profiles(data: Mapping[str, Any], *, where: str = "host profiles") -> dict[str, HostProfile]:
    """Profiles from ``{name: url}`` or ``{name: {"url": ..., "api_key_env": ...}}``; BackendError if wrong."""
    if not isinstance(data, Mapping):
        raise BackendError(f"{where}: expected a mapping of profile names to URLs or tables")
    return {str(name): _profile(str(name), value, where) for name, value in data.items()}


def load_profiles(home: Path) -> dict[str, HostProfile]:
    """The profiles of ``home/hosts.ini`` (none if the file does not exist); values may be quoted."""
    path = home / PROFILES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:  # its message quotes the line, never a value of another line
        raise BackendError(f"{path}: not a valid INI file: {type(exc).__name__}") from None
    data = {name: {k: v.strip().strip("\"'") for k, v in parser[name].items()} for name in parser.sections()}
    return parse_profiles(data, where=str(path))


def resolve_host(
    value: str, profiles: Mapping[str, HostProfile], *, api_key_env: str | None = None
) -> tuple[str, str | None]:
    """``(url, api_key_env)`` for a host flag: a profile's, or ``value`` itself (an Ollama host) with ``api_key_env``.

    >>> lab = HostProfile("lab", "openai+http://gpu1:8000/v1", "LAB_KEY")
    >>> resolve_host("lab", {"lab": lab}, api_key_env="OPENAI_API_KEY")
    ('openai+http://gpu1:8000/v1', 'LAB_KEY')
    >>> resolve_host("http://gpu2:11434", {"lab": lab})
    ('http://gpu2:11434', None)
    >>> resolve_host("gpu2", {"lab": lab})  # no such profile: a host name, as OLLAMA_HOST=gpu2 reads
    ('gpu2', None)
    """
    name = value.strip()
    profile = profiles.get(name) if is_profile_name(name) else None
    if profile is None:
        return name, api_key_env
    return profile.url, profile.api_key_env or api_key_env


def no_profile_note(value: str, profiles: Mapping[str, HostProfile]) -> str | None:
    """For a bare word read as a host name because no profile has it: a note for its connection errors.

    >>> no_profile_note("lbb", {"lab": HostProfile("lab", "http://gpu1:11434")})
    "(and no host profile named 'lbb' either; known: lab)"
    >>> no_profile_note("lab", {"lab": HostProfile("lab", "http://gpu1:11434")}) is None
    True
    """
    name = value.strip()
    if not is_profile_name(name) or name in profiles:
        return None
    return f"(and no host profile named {name!r} either; known: {', '.join(sorted(profiles)) or 'none defined'})"
