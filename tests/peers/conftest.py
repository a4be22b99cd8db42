"""Peers' fixtures (tests/support/peers.py), shared by the modules of this directory."""

from __future__ import annotations

from tests.support.peers import peer_models, two_nbllm

__all__ = ["peer_models", "two_nbllm"]
