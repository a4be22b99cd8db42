"""Model names: ``[host/][namespace/]model[:tag]`` with Ollama's defaults and part rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbllm.errors import InvalidModelName

__all__ = ["DEFAULT_HOST", "DEFAULT_NAMESPACE", "DEFAULT_TAG", "MAX_PART_BYTES", "ModelName"]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# Part rules from Ollama's types/model/name.go. None of them admits "/" or "\", and a part may
# not start with "." -- so ".." and absolute paths can never reach the filesystem.
# Each part is a directory or file name in the store (manifests/<host>/<namespace>/<model>/<tag>), so
# none may be longer than a file name can be: 255 bytes on every common filesystem. Ollama allows a
# 350-character host, which no filesystem could store; the parts are ASCII, so the whole name is at
# most 255 + 3 * 80 + 3 = 498 bytes, well inside any path limit.
MAX_PART_BYTES = 255
_HOST = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.:-]{{0,{MAX_PART_BYTES - 1}}}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_MODEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_TAG = _MODEL


@dataclass(frozen=True)
class ModelName:
    """A parsed, validated model name.

    >>> ModelName.parse("llama3.2")
    ModelName(host='registry.ollama.ai', namespace='library', model='llama3.2', tag='latest')
    >>> ModelName.parse("smollm2:135m").display
    'smollm2:135m'
    >>> ModelName.parse("me/mymodel:v1").display
    'me/mymodel:v1'
    >>> ModelName.parse("hf.co/user/repo:Q4_K_M").display
    'hf.co/user/repo:Q4_K_M'
    >>> ModelName.parse("127.0.0.1:5000/me/m:t").host
    '127.0.0.1:5000'
    >>> ModelName.parse("../etc/passwd")
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidModelName: invalid model name '../etc/passwd'
    >>> ModelName.parse("h" * 256 + "/ns/m")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nbllm.errors.InvalidModelName: invalid model name 'hhh...hhh/ns/m' (the host part is 256 bytes long; at most 255)
    """

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse a user-supplied name, filling Ollama's defaults; raise InvalidModelName if bad."""
        if not isinstance(text, str):
            raise InvalidModelName(f"invalid model name {text!r}")
        raw = text.strip()
        name = raw
        if "@" in name:  # a digest suffix selects nothing locally; Ollama ignores it for lookups
            name = name.split("@", 1)[0]
        tag = DEFAULT_TAG
        last_slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > last_slash:
            name, tag = name[:colon], name[colon + 1 :]
        parts = name.split("/")
        if len(parts) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, namespace, model = DEFAULT_HOST, parts[0], parts[1]
        elif len(parts) == 3:
            host, namespace, model = parts
        else:
            raise InvalidModelName(f"invalid model name '{raw}'")
        for label, part in (("host", host), ("namespace", namespace), ("model", model), ("tag", tag)):
            size = len(part.encode("utf-8", "surrogatepass"))
            if size > MAX_PART_BYTES:  # a file name no filesystem takes: refused before the store sees it
                raise InvalidModelName(
                    f"invalid model name '{raw}' (the {label} part is {size} bytes long; at most {MAX_PART_BYTES})"
                )
        if not (
            _HOST.fullmatch(host)
            and _NAMESPACE.fullmatch(namespace)
            and _MODEL.fullmatch(model)
            and _TAG.fullmatch(tag)
        ):
            raise InvalidModelName(f"invalid model name '{raw}'")
        return cls(host=host, namespace=namespace, model=model, tag=tag)

    @classmethod
    def is_valid(cls, text: str) -> bool:
        """Whether ``text`` parses as a model name."""
        try:
            cls.parse(text)
        except InvalidModelName:
            return False
        return True

    @property
    def display(self) -> str:
        """The shortest form, as ``ollama list`` shows it.

        >>> ModelName.parse("registry.ollama.ai/library/llama3.2:latest").display
        'llama3.2:latest'
        """
        if self.host != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """The fully qualified name, ``host/namespace/model:tag``."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def key(self) -> tuple[str, str, str, str]:
        """Case-insensitive identity (Ollama matches existing names ignoring case)."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def parts(self) -> tuple[str, str, str, str]:
        """The four path components of the manifest file."""
        return (self.host, self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        return self.display
