"""llama.cpp through llama-cpp-python's low-level bindings: the only place ``llama_cpp`` is used.

- ``native``: backend start-up, llama.cpp's log into ``logging``, models, contexts, tokens;
- ``sampling``: native sampler chains (grammars included);
- ``batching``: the continuous-batching decode loop with per-slot prefix caches;
- ``request``: a request's events, handed from the decode thread to its consumer (blocking or ``NoWait``);
- ``embedding``: pooled embeddings;
- ``engine``: ``LlamaEngine``, the Engine protocol over all of it.
"""

from __future__ import annotations

from nbllm.engine.llama.engine import LlamaEngine, load_llama
from nbllm.engine.llama.native import default_threads

__all__ = ["LlamaEngine", "default_threads", "load_llama"]
