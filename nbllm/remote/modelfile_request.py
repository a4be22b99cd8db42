"""A Modelfile as an ``/api/create`` request: local files found, uploaded through a callback, named relatively.

This is the client's half of ``create`` (Ollama's ``Modelfile.CreateRequest`` and ``cmd.CreateHandler``):
``FROM`` a path that exists uploads the GGUF file, or the model files of a directory (safetensors
weights, ``*.json``, ``tokenizer.model``); ``FROM`` a digest names an uploaded blob; ``FROM``
anything else names a model. ``DRAFT`` (a draft model for speculative decoding) is a GGUF file
uploaded as ``draft_files`` (as in Ollama), a digest, or, an nbllm extension, a model name sent as
``draft``. The server only ever sees blob digests under relative file names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbllm.errors import InvalidRequest
from nbllm.options import DEPRECATED_OPTIONS, parse_parameter
from nbllm.schema import CreateRequest, Message
from nbllm.store.modelfile import Command, Modelfile

__all__ = ["PreparedCreate", "model_files", "prepare_create", "relative_names"]

_DIGEST = re.compile(r"@?(sha256)[:-]([0-9a-f]{64})")
_SEMVER = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")

Upload = Callable[[Path], str]
"""Puts a local file where the server can use it and returns its ``sha256:<hex>`` digest."""


@dataclass(frozen=True)
class PreparedCreate:
    """The request to send, and warnings to show the user (deprecated parameters, ...)."""

    request: CreateRequest
    warnings: tuple[str, ...] = ()


def _glob(directory: Path, *patterns: str) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        found += sorted(p for p in directory.glob(pattern) if p.is_file())
    return found


def model_files(directory: Path) -> list[Path]:
    """The files of a model directory that ``create`` uploads (Ollama's ``filesForModel`` choice).

    Weights first (``model*.safetensors``, ``adapter_model*.safetensors``, ``consolidated*.safetensors``
    or ``*.gguf``), then every ``*.json`` (also one level down), ``chat_template.jinja`` and ``tokenizer.model``.
    """
    weights = (
        _glob(directory, "model*.safetensors", "*/model*.safetensors")
        or _glob(directory, "adapter_model*.safetensors")
        or _glob(directory, "consolidated*.safetensors")
        or _glob(directory, "*.gguf")
    )
    if not weights:
        if _glob(directory, "pytorch_model*.bin", "consolidated*.pth"):
            raise InvalidRequest(
                f"{directory} holds PyTorch .bin/.pth weights; nbllm imports safetensors or GGUF "
                "(save the model with safe_serialization=True)"
            )
        raise InvalidRequest(f"no Modelfile or safetensors files found in {directory}")
    extra = _glob(directory, "*.json", "*/*.json", "chat_template.jinja", "tokenizer.model", "*/tokenizer.model")
    if any(w.suffix == ".gguf" for w in weights):
        extra = []  # a GGUF carries its own tokenizer and configuration
    seen: dict[Path, None] = {}
    for path in [*weights, *extra]:
        seen.setdefault(path, None)
    return list(seen)


def relative_names(paths: Iterable[Path]) -> dict[Path, str]:
    """The name each file goes by in the request: relative to their common directory (base name if alone).

    >>> names = relative_names([Path("/m/model.safetensors"), Path("/m/sub/config.json")])
    >>> sorted(names.values())
    ['model.safetensors', 'sub/config.json']
    """
    files = [p.absolute() for p in paths]
    if len(files) < 2:
        return {p: p.name for p in files}
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    return {p: p.relative_to(root).as_posix() for p in files}


def _expand(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _upload_all(paths: list[Path], upload: Upload) -> dict[str, str]:
    return {name: upload(path) for path, name in relative_names(paths).items()}


def _local_files(value: str, base_dir: Path) -> list[Path] | None:
    """The files a FROM/ADAPTER value points at, or None if it is not an existing path."""
    path = _expand(value, base_dir)
    if path.is_dir():
        return model_files(path)
    if path.is_file():
        return [path]
    return None


class _Builder:
    def __init__(self, base_dir: Path, upload: Upload) -> None:
        self.base_dir = base_dir
        self.upload = upload
        self.fields: dict[str, Any] = {}
        self.files: dict[str, str] = {}
        self.params: dict[str, Any] = {}
        self.messages: list[Message] = []
        self.licenses: list[str] = []
        self.warnings: list[str] = []

    def add(self, cmd: Command) -> None:
        handler = getattr(self, f"_{cmd.instruction}", None)
        if handler is None:
            self.fields[cmd.instruction] = cmd.value  # template, system, renderer, parser
        else:
            handler(cmd)

    def _from(self, cmd: Command) -> None:
        digest = _DIGEST.fullmatch(cmd.value.strip())
        if digest is not None:
            self.files[f"sha256-{digest.group(2)}"] = f"sha256:{digest.group(2)}"
            return
        local = _local_files(cmd.value, self.base_dir)
        if local is None:
            self.fields["from"] = cmd.value
        else:
            self.files.update(_upload_all(local, self.upload))

    def _draft(self, cmd: Command) -> None:
        digest = _DIGEST.fullmatch(cmd.value.strip())
        local = _local_files(cmd.value, self.base_dir)
        if digest is not None:
            self.fields["draft_files"] = {f"sha256-{digest.group(2)}": f"sha256:{digest.group(2)}"}
        elif local is not None:
            self.fields["draft_files"] = _upload_all(local, self.upload)
        else:  # nbllm: a model in the server's store (checked by _validate not to look like a path)
            self.fields["draft"] = cmd.value.strip()

    def _adapter(self, cmd: Command) -> None:
        local = _local_files(cmd.value, self.base_dir)
        assert local is not None  # checked by _validate
        self.fields["adapters"] = _upload_all(local, self.upload)

    def _license(self, cmd: Command) -> None:
        self.licenses.append(cmd.value)

    def _message(self, cmd: Command) -> None:
        self.messages.append(Message(role=cmd.key, content=cmd.value))

    def _requires(self, cmd: Command) -> None:
        self.fields["requires"] = cmd.value.strip().removeprefix("v")

    def _parameter(self, cmd: Command) -> None:
        if cmd.key in DEPRECATED_OPTIONS:
            self.warnings.append(f"parameter {cmd.key} is deprecated")
            return
        value = parse_parameter(cmd.key, [cmd.value])
        if isinstance(value, tuple):
            self.params[cmd.key] = [*self.params.get(cmd.key, []), *value]
        else:
            self.params[cmd.key] = value

    def build(self, model: str, quantize: str | None, draft_quantize: str | None = None) -> PreparedCreate:
        req = CreateRequest.model_validate(
            {
                **self.fields,
                "model": model,
                "files": self.files or None,
                "parameters": self.params or None,
                "messages": self.messages or None,
                "license": self.licenses or None,
                "quantize": quantize or None,
                "draft_quantize": draft_quantize or None,
            }
        )
        return PreparedCreate(req, tuple(self.warnings))


def _check_draft(value: str, base_dir: Path) -> None:
    """DRAFT names a GGUF file, a blob digest or (nbllm) a model: a path that is not there is an error, not a name."""
    value = value.strip()
    path = _expand(value, base_dir)
    if _DIGEST.fullmatch(value) or path.is_file():
        return
    if path.is_dir():
        raise InvalidRequest(f"DRAFT {value}: a draft model must be one GGUF file, not a directory")
    if value.startswith((".", "/", "~")) or value.lower().endswith(".gguf") or "\\" in value:
        raise InvalidRequest(f"DRAFT {value}: no such file")


def _validate(modelfile: Modelfile, base_dir: Path) -> None:
    """The checks that need no upload, so that a bad Modelfile fails before any large file moves."""
    for cmd in modelfile.commands:
        if cmd.instruction == "parameter" and cmd.key not in DEPRECATED_OPTIONS:
            parse_parameter(cmd.key, [cmd.value])
        elif cmd.instruction == "draft":
            _check_draft(cmd.value, base_dir)
        elif cmd.instruction == "requires" and _SEMVER.fullmatch(cmd.value.strip()) is None:
            raise InvalidRequest("requires must be a valid semver (e.g. 0.14.0)")
        elif cmd.instruction == "adapter" and _local_files(cmd.value, base_dir) is None:
            raise InvalidRequest(f"ADAPTER {cmd.value}: no such file or directory")
        if cmd.instruction in ("from", "adapter", "draft") and not _DIGEST.fullmatch(cmd.value.strip()):
            lone = _expand(cmd.value, base_dir).is_file()
            for path in _local_files(cmd.value, base_dir) or []:
                _check_weights(f"{cmd.instruction.upper()} {cmd.value}", path, lone=lone)


_SAFETENSORS_HEADER_MAX = 100 << 20


def _weights_kind(path: Path) -> str | None:
    """``gguf`` or ``safetensors`` by the file's first bytes (magic, or a JSON header and its length)."""
    with path.open("rb") as fh:
        head = fh.read(9)
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        if length <= min(_SAFETENSORS_HEADER_MAX, path.stat().st_size - 8):
            return "safetensors"
    return None


def _check_weights(line: str, path: Path, *, lone: bool) -> None:
    """A weights file that is what its name says, and a lone file that is weights at all: checked before
    anything is uploaded, so that ``FROM ./notes.txt`` sends nothing to the server."""
    suffix = path.suffix.lower()
    named = suffix in (".gguf", ".safetensors")
    if not named and not lone:
        return  # a model directory's other files (config.json, tokenizer.model, ...)
    kind = _weights_kind(path)
    if kind is None or (named and kind != suffix[1:]):
        raise InvalidRequest(f"{line}: {path.name} is not a GGUF file or safetensors weights; nothing was uploaded")


def prepare_create(
    modelfile: Modelfile,
    *,
    base_dir: Path,
    upload: Upload,
    model: str = "",
    quantize: str | None = None,
    draft_quantize: str | None = None,
) -> PreparedCreate:
    """The ``/api/create`` request for a Modelfile whose relative paths start at ``base_dir``.

    Every local file it names is handed to ``upload`` (which returns its digest); bad parameters,
    versions and adapter paths are errors before anything is uploaded.
    """
    _validate(modelfile, base_dir)
    builder = _Builder(base_dir, upload)
    for cmd in modelfile.commands:
        builder.add(cmd)
    return builder.build(model, quantize, draft_quantize)
