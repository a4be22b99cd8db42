"""What ``/api/create`` was given, turned into layers: uploaded GGUF files parsed, safetensors
directories converted, LoRA adapters checked or converted, weights quantized.

Uploaded files arrive as blobs named by relative paths. Everything made here (a converted or
quantized GGUF) is written in a private work directory and enters the blob store by an atomic
rename once complete and hashed, so the store never holds a partial blob under a real digest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

from nbllm.errors import EngineError, InvalidRequest, StoreError
from nbllm.schema import ProgressResponse
from nbllm.store import ModelStore
from nbllm.store.blobs import fsync_dir
from nbllm.store.digest import digest_file, normalize_digest
from nbllm.store.gguf import GGUFInfo, read_gguf
from nbllm.store.lock import IN_USE, Pin, hold_file
from nbllm.store.manifests import MEDIA_ADAPTER, MEDIA_MODEL, MEDIA_PROJECTOR, Layer
from nbllm.store.permissions import FILE_MODE, make_private_dirs

__all__ = ["Built", "Workspace", "adapter_layers", "check_files", "file_kind", "model_layers", "quantize_layer"]

Steps = Generator[ProgressResponse, None, list["Built"]]


@dataclass(frozen=True)
class Built:
    """A layer of the new model: in the store already (``layer`` set), or a file this create made."""

    media_type: str
    path: Path
    """The blob, or the file in the work directory that becomes one."""
    info: GGUFInfo | None = None
    layer: Layer | None = None
    status: str = ""

    @classmethod
    def stored(cls, store: ModelStore, layer: Layer, info: GGUFInfo | None = None) -> Built:
        """A layer whose blob the store already has."""
        return cls(layer.mediaType, store.blobs.path(layer.digest), info, layer, f"using existing layer {layer.digest}")


_MAX_NAME_BYTES = 255
"""The longest file name (one path element) a filesystem takes."""
_MAX_PATH_BYTES = 1024
"""The longest relative path of an uploaded file (model directories are shallow)."""


def check_files(store: ModelStore, files: Mapping[str, str] | None) -> None:
    """Relative, clean paths and digests of blobs that are present (Ollama's wording for a bad path).

    The files are laid out under their names in a work directory (for conversion), so a name must
    also be one a filesystem takes: no NUL or other control character, no element over 255 bytes.
    """
    for path, digest in (files or {}).items():
        if any(ord(c) < 0x20 or c == "\x7f" for c in path):
            raise InvalidRequest(f"file path must not contain control characters (NUL, newline, ...): {path!r}")
        parts = path.split("/")  # Go's fs.ValidPath: no empty, "." or ".." element, no leading slash
        if any(part in ("", ".", "..") for part in parts) or "\\" in path or ":" in path:
            raise InvalidRequest(f"file path must be relative: {path}")
        size = len(path.encode("utf-8", "surrogatepass"))
        longest = max(len(part.encode("utf-8", "surrogatepass")) for part in parts)
        if longest > _MAX_NAME_BYTES or size > _MAX_PATH_BYTES:
            raise InvalidRequest(
                f"file path is too long ({size} bytes, the longest name {longest}; "
                f"at most {_MAX_PATH_BYTES} and {_MAX_NAME_BYTES}): {path[:60]!r}..."
            )
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"file path is not valid Unicode: {path!r}") from None
        normalize_digest(digest)
        if not store.blobs.has(digest):
            raise InvalidRequest(f"blob {digest} for {path} not found: upload it first (POST /api/blobs/{digest})")


def file_kind(store: ModelStore, files: Mapping[str, str]) -> str:
    """``gguf`` or ``safetensors``: by file name, else by the GGUF magic of the blob."""
    kinds = set()
    for path, digest in files.items():
        with store.blobs.path(digest).open("rb") as fh:
            magic = fh.read(4) == b"GGUF"
        if path.endswith(".safetensors"):
            kinds.add("safetensors")
        elif path.endswith(".gguf") and not magic:
            raise InvalidRequest(f"{path} is not a GGUF file: it does not start with the GGUF magic bytes")
        elif magic:
            kinds.add("gguf")
    if len(kinds) > 1:
        raise InvalidRequest("mixed model file types: found both gguf and safetensors inputs")
    if not kinds:
        raise InvalidRequest("unknown type: the files are neither GGUF nor safetensors weights")
    return kinds.pop()


def _read_upload(store: ModelStore, path: str, digest: str) -> GGUFInfo:
    """The header of an uploaded GGUF file: a damaged one is the request's error, not the server's."""
    try:
        return read_gguf(store.blobs.path(digest))
    except StoreError as exc:
        raise InvalidRequest(f"{path} is not a valid GGUF file ({exc.message})") from None


def _gguf_media_type(info: GGUFInfo) -> str:
    kind = str(info.metadata.get("general.type", "model"))
    if kind == "adapter":
        return MEDIA_ADAPTER
    if kind in ("projector", "mmproj") or (info.architecture == "clip" and not info.arch_value("block_count")):
        return MEDIA_PROJECTOR
    return MEDIA_MODEL


class Workspace:
    """A private directory for one create: staged uploads, conversion and quantization outputs."""

    def __init__(self, store: ModelStore, pin: Pin | None = None) -> None:
        self.store = store
        self.pin = pin
        """Pins what this create puts in the store until its manifest is written."""
        make_private_dirs(store.tmp_dir)
        with store.lock.held():  # a startup prune in another process sees it in use from the start
            self.dir = Path(tempfile.mkdtemp(prefix="create-", dir=store.tmp_dir))
            self._in_use = (self.dir / IN_USE).open("wb")
            hold_file(self._in_use.fileno())

    def close(self) -> None:
        """Remove everything left in the work directory."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self._in_use.close()

    def stage(self, files: Mapping[str, str], name: str) -> Path:
        """A directory holding the uploaded blobs under their file names (links, not copies, when possible)."""
        root = self.dir / name
        for path, digest in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = self.store.blobs.path(digest)
            try:
                os.link(blob, target)
            except OSError:
                try:
                    target.symlink_to(blob)
                except OSError:
                    shutil.copyfile(blob, target)
        return root

    def commit(self, built: Built) -> Built:
        """Move a file this create made into the blob store under its digest (atomic rename, or a verified copy)."""
        if built.layer is not None:
            return built
        path = built.path
        digest = digest_file(path)
        size = path.stat().st_size
        if self.pin is not None:
            self.pin.add([digest])
        existed = self.store.blobs.has(digest)
        if not existed:
            target = self.store.blobs.path(digest)
            try:
                os.chmod(path, FILE_MODE)  # (as every file of the store: not world-readable)
                os.replace(path, target)
                fsync_dir(target.parent)
            except OSError:  # another filesystem: stream it through the verifying writer
                with path.open("rb") as fh:
                    self.store.blobs.put_stream(iter(lambda: fh.read(1 << 20), b""), expected=digest)
        with contextlib.suppress(OSError):
            path.unlink()
        layer = Layer(mediaType=built.media_type, digest=digest, size=size)
        verb = "using existing" if existed else "creating new"
        return Built(built.media_type, self.store.blobs.path(digest), built.info, layer, f"{verb} layer {digest}")


def model_layers(ws: Workspace, files: Mapping[str, str]) -> Steps:
    """Layers of the uploaded model files: GGUF files as they are, a safetensors directory converted."""
    if file_kind(ws.store, files) == "gguf":
        built = []
        for path in sorted(files):
            yield ProgressResponse(status="parsing GGUF")
            info = _read_upload(ws.store, path, files[path])
            layer = Layer(mediaType=_gguf_media_type(info), digest=files[path], size=ws.store.blobs.size(files[path]))
            built.append(Built.stored(ws.store, layer, info))
        if sum(b.media_type == MEDIA_MODEL for b in built) > 1:
            raise InvalidRequest("split GGUF files are not supported: merge them first (llama-gguf-split --merge)")
        return built
    from nbllm.store.convert import convert_model

    source = ws.stage(files, "model")
    yield ProgressResponse(status="converting model")
    converted = convert_model(source, ws.dir / "model.gguf")
    return [Built(MEDIA_MODEL, converted.path, read_gguf(converted.path))]


def adapter_layers(ws: Workspace, adapters: Mapping[str, str], base: GGUFInfo | None) -> Steps:
    """The LoRA adapter layer: a GGUF adapter checked against the base model, or a PEFT adapter converted."""
    if base is None:
        raise InvalidRequest("an adapter needs a base model with GGUF weights")
    if file_kind(ws.store, adapters) == "safetensors":
        from nbllm.store.convert.lora import convert_adapter

        source = ws.stage(adapters, "adapter")
        yield ProgressResponse(status="converting adapter")
        converted = convert_adapter(
            source,
            ws.dir / "adapter.gguf",
            architecture=base.architecture,
            head_count=int(base.arch_value("attention.head_count", 0) or 0),
            head_count_kv=int(base.arch_value("attention.head_count_kv", 0) or base.arch_value("attention.head_count")),
        )
        return [Built(MEDIA_ADAPTER, converted.path)]
    if len(adapters) > 1:
        raise InvalidRequest("only one adapter is currently supported")
    path, digest = next(iter(adapters.items()))
    yield ProgressResponse(status="parsing GGUF")
    info = _read_upload(ws.store, path, digest)
    if info.metadata.get("general.type") != "adapter" or info.metadata.get("adapter.type") != "lora":
        raise InvalidRequest(f"{path} is not a LoRA adapter GGUF (general.type must be 'adapter', adapter.type 'lora')")
    if info.architecture != base.architecture:
        raise InvalidRequest(
            f"adapter {path} is for {info.architecture or 'an unknown architecture'} models, not {base.architecture}"
        )
    layer = Layer(mediaType=MEDIA_ADAPTER, digest=digest, size=ws.store.blobs.size(digest))
    return [Built.stored(ws.store, layer, info)]


def quantize_layer(ws: Workspace, built: Built, target: str) -> Generator[ProgressResponse, None, Built]:
    """The model layer quantized to ``target`` with llama.cpp, with Ollama's progress statuses."""
    from nbllm.engine.quantize import SOURCE_TYPES, bits_per_weight, quantize_model

    assert built.info is not None
    source_type = built.info.file_type
    if source_type == target:
        return built
    if source_type not in SOURCE_TYPES:
        raise InvalidRequest("quantization is only supported for F16, BF16 and F32 models")
    status = f"quantizing {source_type} model to {target}"
    total = built.path.stat().st_size
    expected = max(1.0, built.info.parameter_count * bits_per_weight(target) / 8)
    key = built.layer.digest if built.layer is not None else "sha256:" + "0" * 64
    yield ProgressResponse(status=status, digest=key, total=total, completed=0)
    out = ws.dir / f"{target}.gguf"
    for written in quantize_model(built.path, out, target):
        done = min(total - 1, int(total * written / expected))
        yield ProgressResponse(status=status, digest=key, total=total, completed=done)
    yield ProgressResponse(status=status, digest=key, total=total, completed=total)
    yield ProgressResponse(status="verifying conversion")
    info = read_gguf(out)
    if info.file_type != target:
        raise EngineError(f"llama.cpp wrote a {info.file_type} file, not {target}")
    if built.layer is None:
        built.path.unlink(missing_ok=True)  # the unquantized conversion is not kept
    return Built(built.media_type, out, info)
