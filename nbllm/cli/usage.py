"""Help pages laid out as Ollama's (cobra's): ``Usage:``, ``Flags:``, ``Environment Variables:``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["ENV_DOCS", "OllamaCommand", "first_line", "flag_lines", "root_help"]

# What `ollama <command> --help` says about each variable (Ollama's envconfig wording).
ENV_DOCS: dict[str, str] = {
    "OLLAMA_DEBUG": "Show additional debug information (e.g. OLLAMA_DEBUG=1)",
    "OLLAMA_HOST": "IP Address for the nbllm server (default 127.0.0.1:11434)",
    "OLLAMA_KEEP_ALIVE": 'The duration that models stay loaded in memory (default "5m")',
    "OLLAMA_MAX_LOADED_MODELS": "Maximum number of loaded models per GPU",
    "OLLAMA_MAX_QUEUE": "Maximum number of queued requests",
    "OLLAMA_MODELS": "The path to the models directory",
    "OLLAMA_NUM_PARALLEL": "Maximum number of parallel requests",
    "OLLAMA_NOPRUNE": "Do not prune model blobs on startup",
    "OLLAMA_ORIGINS": "A comma separated list of allowed origins",
    "OLLAMA_SCHED_SPREAD": "Always schedule model across all GPUs",
    "OLLAMA_TMPDIR": "Location for temporary files",
    "OLLAMA_FLASH_ATTENTION": "Enabled flash attention",
    "OLLAMA_KV_CACHE_TYPE": "Quantization type for the K/V cache (default: f16)",
    "OLLAMA_LLM_LIBRARY": "Set LLM library to bypass autodetection",
    "OLLAMA_GPU_OVERHEAD": "Reserve a portion of VRAM per GPU (bytes)",
    "OLLAMA_LOAD_TIMEOUT": 'How long to allow model loads to stall before giving up (default "5m")',
    "OLLAMA_CONTEXT_LENGTH": "Context length to use unless otherwise specified (default: 4096)",
    "OLLAMA_NOHISTORY": "Do not preserve readline history",
    "NBLLM_HOME": "nbllm's data directory: history, default model store (default ~/.nbllm)",
    "NBLLM_PACKAGE_INDEX": "Package index URLs for built-in models (default: pip's configuration)",
    "NBLLM_API_KEY": "Require this key as 'Authorization: Bearer <key>' on every route but / (default: none)",
    "NBLLM_MAX_REQUEST_SIZE": "Largest JSON request body in bytes; blob uploads excepted (default 67108864)",
    "NBLLM_METRICS": "Serve Prometheus metrics at /metrics (default true)",
    "NBLLM_HEADER_TIMEOUT": 'How long a client may take to send its request headers (default "10s")',
    "NBLLM_MAX_CONNECTIONS": "Most client connections at once; one more gets 503 (default 4096)",
    "NBLLM_KV_CACHE_RAM": "RAM per loaded model for the prompt cache of evicted slots; 0 = off (default 256 MiB)",
    "NBLLM_KV_SNAPSHOTS": "Keep each conversation's KV state in the store to resume after a restart (default false)",
    "NBLLM_KV_SNAPSHOTS_MAX": "Most bytes of disk for KV snapshots, least recently used removed first (default 4 GiB)",
}

_TYPE_NAMES = {"text": "string", "integer": "int", "float": "float", "choice": "string", "path": "string"}


def _flag(param: click.Option) -> tuple[str, str, str]:
    """(sort key, left column, description) of one option, as pflag prints it."""
    shorts = [o for o in param.opts if not o.startswith("--")]
    longs = [o for o in param.opts if o.startswith("--")]
    left = f"  {shorts[0]}, {longs[0]}" if shorts and longs else f"      {longs[0] if longs else shorts[0]}"
    if not param.is_flag:
        left += " " + _TYPE_NAMES.get(param.type.name, param.type.name)
        if param._flag_needs_value and isinstance(param.flag_value, str):
            left += f'[="{param.flag_value}"]'
    text = param.help or ""
    default = param.default
    shown = isinstance(default, (str, int, float)) and not isinstance(default, bool) and default not in ("", 0)
    if not param.is_flag and shown:
        text += f' (default "{default}")' if isinstance(default, str) else f" (default {default})"
    return (longs[0] if longs else shorts[0]).lstrip("-"), left, text


def flag_lines(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """Rows aligned as pflag aligns them: the description starts 3 columns after the longest flag.

    >>> flag_lines([("help", "  -h, --help", "help for ps"), ("json", "      --json", "Print JSON")])
    ['  -h, --help   help for ps', '      --json   Print JSON']
    """
    width = max((len(left) for _, left, _ in rows), default=0)
    return [f"{left.ljust(width)}   {text}".rstrip() for _, left, text in sorted(rows)]


def first_line(text: str | None) -> str:
    """A docstring's first line without its full stop, as cobra's ``Short``.

    >>> first_line("Run a model.\\n\\nMore.")
    'Run a model'
    """
    lines = (text or "").strip().splitlines()
    return lines[0].strip().removesuffix(".") if lines else ""


def _env_block(names: Sequence[str]) -> list[str]:
    if not names:
        return []
    return ["", "Environment Variables:", *(f"      {n:<24}   {ENV_DOCS.get(n, '')}".rstrip() for n in names)]


class OllamaCommand(click.Command):
    """A command whose ``--help`` reads like Ollama's: ``use`` is cobra's ``Use``, ``env`` the variables it honours."""

    def __init__(
        self,
        *args: Any,
        use: str | None = None,
        env: Sequence[str] = ("OLLAMA_HOST",),
        aliases: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.use = use
        self.env = tuple(env)
        self.aliases = tuple(aliases)

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        """``-h, --help   help for <command>``."""
        option = super().get_help_option(ctx)
        if option is not None:
            option.help = f"help for {self.name}"
        return option

    def use_line(self, ctx: click.Context) -> str:
        """``nbllm run MODEL [PROMPT] [flags]``."""
        if self.use is not None:
            rest = self.use.partition(" ")[2]
        else:
            parts = []
            for arg in self.params:
                if isinstance(arg, click.Argument):
                    meta = (arg.name or "arg").upper()
                    meta = f"{meta} [{meta}...]" if arg.nargs == -1 and arg.required else meta
                    parts.append(meta if arg.required else f"[{meta}]")
            rest = " ".join(parts)
        path = f"{ctx.parent.command_path} {self.name}" if ctx.parent else ctx.command_path  # aliases show the name
        return " ".join(p for p in (path, rest, "[flags]") if p)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Cobra's help page."""
        short = first_line(self.help)
        lines = [short, "", "Usage:", f"  {self.use_line(ctx)}"]
        if self.aliases:
            lines += ["", "Aliases:", "  " + ", ".join((self.name or "", *self.aliases))]
        flags = [_flag(p) for p in self.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
        if flags:
            lines += ["", "Flags:", *flag_lines(flags)]
        lines += _env_block(self.env)
        formatter.write("\n".join(lines) + "\n")


def root_help(group: click.Group, ctx: click.Context, version_help: str) -> str:
    """The page ``nbllm --help`` prints: commands in Ollama's order, then the root flags."""
    names = group.list_commands(ctx)
    pad = max([11, *(len(n) for n in names)])
    lines = [first_line(group.help), "", "Usage:", f"  {ctx.command_path} [flags]"]
    lines += [f"  {ctx.command_path} [command]", "", "Available Commands:"]
    for name in names:
        cmd = group.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            lines.append(f"  {name.ljust(pad)} {first_line(cmd.short_help or cmd.help)}".rstrip())
    rows = [
        ("help", "  -h, --help", f"help for {ctx.command_path}"),
        ("version", "  -v, --version", version_help),
    ]
    lines += ["", "Flags:", *flag_lines(rows), ""]
    lines.append(f'Use "{ctx.command_path} [command] --help" for more information about a command.')
    return "\n".join(lines) + "\n"
