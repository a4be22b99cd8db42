"""Built-in names for popular thinking models, pulled from Hugging Face GGUF repositories.

No small thinking model ships on a Python package index, so these names resolve to a GGUF on the
Hub (pulled through the ``hf.co/<repo>:<quant>`` path of :mod:`nbllm.remote.hf`) and are stored
under the short name, with the template and parameters a user of Ollama gets for that name: the
template switches thinking on and off through ``.Think``/``.IsThinkSet`` as Ollama's does, so the
``thinking`` capability is found and ``think: false`` gives an answer without reasoning.

Pure data: the pulling is in :mod:`nbllm.remote.hf`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from nbllm.store.manifests import MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE
from nbllm.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName

__all__ = ["HUB_LIBRARY", "HubEntry", "find_hub_entry"]


@dataclass(frozen=True)
class HubEntry:
    """A built-in name whose GGUF comes from a Hugging Face repository."""

    names: tuple[str, ...]
    """``model:tag`` names in the default namespace that resolve to this entry."""
    repo: str
    """``<owner>/<repository>`` on the Hub."""
    quant: str
    """The GGUF to take (a quantization name or a file name, as in ``hf.co/<repo>:<quant>``)."""
    template_file: str
    """Go template shipped in ``nbllm/store/templates/``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Default parameters (the params layer)."""
    system: str | None = None
    """Default system prompt."""
    description: str = ""

    def source(self) -> ModelName:
        """The ``hf.co/<repo>:<quant>`` name the GGUF is pulled by.

        >>> find_hub_entry(ModelName.parse("qwen3:0.6b")).source().display
        'hf.co/Qwen/Qwen3-0.6B-GGUF:Q8_0'
        """
        owner, repository = self.repo.split("/")
        return ModelName("hf.co", owner, repository, self.quant)

    def template(self) -> str:
        """The Go template text."""
        return resources.files("nbllm.store").joinpath("templates").joinpath(self.template_file).read_text()

    def layers(self) -> list[tuple[str, str]]:
        """The template, parameters and system prompt, as (media type, text) layers."""
        out = [(MEDIA_TEMPLATE, self.template()), (MEDIA_PARAMS, json.dumps(self.params))]
        return out + ([(MEDIA_SYSTEM, self.system)] if self.system else [])


# Ollama's qwen3 parameters (its library's params layer): ChatML stops and Qwen's recommended
# sampling for thinking mode.
_QWEN3_PARAMS = {
    "repeat_penalty": 1,
    "stop": ["<|im_start|>", "<|im_end|>"],
    "temperature": 0.6,
    "top_k": 20,
    "top_p": 0.95,
}
# Ollama's deepseek-r1 stops (its params layer), with the sampling DeepSeek recommends for the R1
# distills (temperature 0.6, top_p 0.95: lower temperatures make them repeat themselves).
_DEEPSEEK_R1_PARAMS = {
    "stop": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
    "temperature": 0.6,
    "top_p": 0.95,
}

HUB_LIBRARY: tuple[HubEntry, ...] = (
    HubEntry(
        names=("qwen3:0.6b",),
        repo="Qwen/Qwen3-0.6B-GGUF",
        quant="Q8_0",
        template_file="qwen3.gotmpl",
        params=_QWEN3_PARAMS,
        description="Qwen3 0.6B, Q8_0 (Qwen's own GGUF repository)",
    ),
    HubEntry(
        names=("qwen3:1.7b",),
        repo="Qwen/Qwen3-1.7B-GGUF",
        quant="Q8_0",
        template_file="qwen3.gotmpl",
        params=_QWEN3_PARAMS,
        description="Qwen3 1.7B, Q8_0 (Qwen's own GGUF repository)",
    ),
    HubEntry(
        names=("qwen3:4b",),
        repo="Qwen/Qwen3-4B-GGUF",
        quant="Q4_K_M",
        template_file="qwen3.gotmpl",
        params=_QWEN3_PARAMS,
        description="Qwen3 4B, Q4_K_M (Qwen's own GGUF repository)",
    ),
    HubEntry(
        names=("deepseek-r1:1.5b",),
        repo="bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF",
        quant="Q4_K_M",
        template_file="deepseek-r1.gotmpl",
        params=_DEEPSEEK_R1_PARAMS,
        description="DeepSeek-R1-Distill-Qwen-1.5B, Q4_K_M",
    ),
    HubEntry(
        names=("deepseek-r1:7b",),
        repo="bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF",
        quant="Q4_K_M",
        template_file="deepseek-r1.gotmpl",
        params=_DEEPSEEK_R1_PARAMS,
        description="DeepSeek-R1-Distill-Qwen-7B, Q4_K_M",
    ),
)


def find_hub_entry(name: ModelName) -> HubEntry | None:
    """The built-in Hub entry for a name in the default registry and namespace, if any.

    >>> find_hub_entry(ModelName.parse("deepseek-r1:1.5b")).repo
    'bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF'
    >>> find_hub_entry(ModelName.parse("me/qwen3:0.6b")) is None
    True
    """
    if name.host.lower() != DEFAULT_HOST or name.namespace.lower() != DEFAULT_NAMESPACE:
        return None
    wanted = f"{name.model}:{name.tag}".lower()
    return next((e for e in HUB_LIBRARY if wanted in e.names), None)
