"""Registry endpoints: ``POST /api/push`` (``/api/pull`` is in ``schema.models``)."""

from __future__ import annotations

from nbllm.schema.models import _NamedRequest

__all__ = ["PushRequest"]


class PushRequest(_NamedRequest):
    """Body of ``POST /api/push``."""

    insecure: bool = False
    """Allow plain-HTTP registries."""
    stream: bool = True
    """Stream progress (default) or return only the final status."""
