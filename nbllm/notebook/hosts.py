"""Which server a magic's ``--host`` names: a URL, ``local``, or a named profile of the magics' config.

Profiles come from ``hosts.ini`` in nbllm's home (shared with ``nbllm bench``) and from the
traitlet ``c.NbllmMagics.hosts``, which wins on a name both define; both are parsed by
:mod:`nbllm.backends.profiles`. A profile names the variable holding its key, never the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nbllm.backends.profiles import HostProfile, is_profile_name, load_profiles, parse_profiles, resolve_host
from nbllm.config import Settings

__all__ = ["magic_profiles", "resolve_hosts", "resolve_magic_host"]


def magic_profiles(configured: Mapping[str, Any], settings: Settings) -> dict[str, HostProfile]:
    """The profiles of ``NBLLM_HOME/hosts.ini``, then those of ``NbllmMagics.hosts`` (which win)."""
    profiles = load_profiles(settings.home)
    profiles.update(parse_profiles(configured, where="NbllmMagics.hosts"))
    return profiles


def resolve_magic_host(
    value: str | None, configured: Mapping[str, Any], settings: Settings, api_key_env: str | None
) -> tuple[str | None, str | None]:
    """``(url, api_key_env)`` of a host flag (None: the default server); unknown profile names fail."""
    if value is None or not is_profile_name(value):
        return value, api_key_env
    return resolve_host(value, magic_profiles(configured, settings), api_key_env=api_key_env)


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
