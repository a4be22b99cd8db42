"""Transfers with other machines: the model library's package index, OCI registries, Hugging Face.

The store (``nbllm.store``) holds what is here and never touches the network; this package fetches
models into it and sends them out of it, and prepares the files a client uploads for ``create``.
"""

from __future__ import annotations
