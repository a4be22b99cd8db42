"""``nbllm serve``: the API server in the foreground."""

from __future__ import annotations

import logging

from nbllm.cli.main import cli

__all__ = ["serve"]

_ENV_HELP = """
\b
Environment Variables:
      OLLAMA_DEBUG               Show additional debug information (e.g. OLLAMA_DEBUG=1)
      OLLAMA_HOST                IP Address for the ollama server (default 127.0.0.1:11434)
      OLLAMA_KEEP_ALIVE          The duration that models stay loaded in memory (default "5m")
      OLLAMA_MAX_LOADED_MODELS   Maximum number of loaded models per GPU
      OLLAMA_MAX_QUEUE           Maximum number of queued requests
      OLLAMA_MODELS              The path to the models directory
      OLLAMA_NUM_PARALLEL        Maximum number of parallel requests
      OLLAMA_NOPRUNE             Do not prune model blobs on startup
      OLLAMA_ORIGINS             A comma separated list of allowed origins
      OLLAMA_SCHED_SPREAD        Always schedule model across all GPUs
      OLLAMA_TMPDIR              Location for temporary files
      OLLAMA_FLASH_ATTENTION     Enabled flash attention
      OLLAMA_KV_CACHE_TYPE       Quantization type for the K/V cache (default: f16)
      OLLAMA_LLM_LIBRARY         Set LLM library to bypass autodetection
      OLLAMA_GPU_OVERHEAD        Reserve a portion of VRAM per GPU (bytes)
      OLLAMA_LOAD_TIMEOUT        How long to allow model loads to stall before giving up (default "5m")
      OLLAMA_CONTEXT_LENGTH      Context length to use unless otherwise specified (default: 4096)
      NBLLM_PACKAGE_INDEX        Package index URLs for built-in models (default: pip's configuration)

Every OLLAMA_* variable may also be given as NBLLM_*, which takes precedence.
"""


@cli.command(epilog=_ENV_HELP)
def serve() -> None:
    """Start nbllm (the API server, in the foreground)."""
    import uvicorn

    from nbllm.config import Settings
    from nbllm.runtime import Runtime
    from nbllm.server import create_app

    settings = Settings.from_env()
    level = {0: logging.INFO, 1: logging.DEBUG, 2: logging.DEBUG}[settings.debug]
    logging.basicConfig(
        level=level, format="time=%(asctime)s level=%(levelname)s source=%(name)s msg=%(message)s", force=True
    )
    runtime = Runtime.from_settings(settings)
    logging.getLogger("nbllm").info("server config %s", settings.model_dump(mode="json"))
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, finishes, runs the lifespan shutdown
    # (which unloads every model), then returns.
    uvicorn.run(
        create_app(runtime, close_runtime=True),
        host=settings.host.bind_host,
        port=settings.host.port,
        log_config=None,
        access_log=settings.debug > 0,
        timeout_graceful_shutdown=10,
    )
