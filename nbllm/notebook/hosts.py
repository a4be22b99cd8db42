"""Which server a magic's ``--host`` names: a URL, ``local``, a named profile of the magics' config, or a host name.

Profiles come from ``hosts.ini`` in nbllm's home (shared with ``nbllm bench``) and from the
traitlet ``c.NbllmMagics.hosts``, which wins on a name both define; both are parsed by
:mod:`nbllm.backends.profiles`. A profile names the variable holding its key, never the key. A bare
word that names no profile is an Ollama host (``gpu2``: ``http://gpu2:11434``); its connection
errors say that no profile has that name either, so a mistyped profile stays visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nbllm.backends.profiles import (
    HostProfile,
    is_profile_name,
    load_profiles,
    no_profile_note,
    parse_profiles,
    resolve_host,
)
from nbllm.config import Settings, parse_host

__all__ = ["host_notes", "magic_profiles", "resolve_hosts", "resolve_magic_host"]


def magic_profiles(configured: Mapping[str, Any], settings: Settings) -> dict[str, HostProfile]:
    """The profiles of ``NBLLM_HOME/hosts.ini``, then those of ``NbllmMagics.hosts`` (which win)."""
    profiles = load_profiles(settings.home)
    profiles.update(parse_profiles(configured, where="NbllmMagics.hosts"))
    return profiles


def resolve_magic_host(
    value: str | None, configured: Mapping[str, Any], settings: Settings, api_key_env: str | None
) -> tuple[str | None, str | None]:
    """``(url, api_key_env)`` of a host flag (None: the default server); a word no profile has is a host name."""
    if value is None or not is_profile_name(value):
        return value, api_key_env
    return resolve_host(value, magic_profiles(configured, settings), api_key_env=api_key_env)


def host_notes(values: Sequence[str | None], configured: Mapping[str, Any], settings: Settings) -> dict[str, str]:
    """``{server URL: note}`` for the bare words among ``values`` that name no profile (read as host names)."""
    words = [v for v in values if v and is_profile_name(v)]
    if not words:
        return {}
    profiles = magic_profiles(configured, settings)
    return {parse_host(w.strip()).url: note for w in words if (note := no_profile_note(w, profiles))}


def resolve_hosts(
    values: Sequence[str], configured: Mapping[str, Any], settings: Settings, api_key_env: str | None
) -> tuple[tuple[str, ...], dict[str, str | None], dict[str, str]]:
    """The URLs of several host flags, each one's key variable and the profile names among them (the
    serving benchmark names those targets by their profile)."""
    urls: list[str] = []
    key_envs: dict[str, str | None] = {}
    names: dict[str, str] = {}
    profiles = magic_profiles(configured, settings) if any(is_profile_name(v) for v in values) else {}
    for value in values:
        url, key_env = resolve_magic_host(value, configured, settings, api_key_env)
        assert url is not None
        urls.append(url)
        key_envs[url] = key_env
        if value.strip() in profiles:
            names[url] = value.strip()
    return tuple(urls), key_envs, names
