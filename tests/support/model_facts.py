"""Facts of a pinned GGUF model, read once from the file (with the ``gguf`` package, not nbllm's reader).

Tests compare what nbllm reports (``show``, ``pull`` progress, embeddings) with these, instead of
writing the numbers out: when the pinned model changes, the tests follow it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import gguf

__all__ = ["ModelFacts", "read_model_facts"]


@dataclass(frozen=True)
class ModelFacts:
    """What a GGUF file says about its model, and the file's own digest and size."""

    digest: str
    """``sha256:<hex>`` of the file: its blob's digest in the store."""
    size: int
    """Bytes in the file."""
    architecture: str
    context_length: int
    """The trained context (``<arch>.context_length``)."""
    embedding_length: int
    """Length of an embedding vector (``<arch>.embedding_length``)."""
    quantization: str
    """The file type as Ollama names it (``Q4_1``)."""

    @property
    def short_digest(self) -> str:
        """The 12 hex digits Ollama's progress lines show (``pulling b179c9523d0e``)."""
        return self.digest.removeprefix("sha256:")[:12]


def read_model_facts(path: Path) -> ModelFacts:
    """Read the facts of the GGUF at ``path``."""
    reader = gguf.GGUFReader(path)

    def field(key: str) -> object:
        return reader.fields[key].contents()

    arch = str(field("general.architecture"))
    file_type = gguf.LlamaFileType(int(str(field("general.file_type"))))
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return ModelFacts(
        digest="sha256:" + digest.hexdigest(),
        size=path.stat().st_size,
        architecture=arch,
        context_length=int(str(field(f"{arch}.context_length"))),
        embedding_length=int(str(field(f"{arch}.embedding_length"))),
        quantization=file_type.name.removeprefix("MOSTLY_"),
    )
