"""``nbllm verify [MODEL]...``: re-hash the store's blobs and report corruption (exit 1 if any)."""

from __future__ import annotations

import click

from nbllm.cli.main import cli
from nbllm.errors import NbllmError
from nbllm.humanize import human_bytes

__all__ = ["verify"]


@cli.command(use="verify [MODEL]...", env=("OLLAMA_MODELS", "NBLLM_HOME"))
@click.argument("models", nargs=-1)
def verify(models: tuple[str, ...]) -> None:
    """Check that models' files are intact."""
    from nbllm.config import Settings
    from nbllm.prompt.template_check import check_template
    from nbllm.store import ModelStore
    from nbllm.store.verify import verify_store

    settings = Settings.from_env()
    store = ModelStore(settings.models_dir)
    report = verify_store(store, models or None, check_template=check_template)
    broken = set(report.broken_models())
    for name in report.models:
        if name not in broken:
            click.echo(f"{name}: ok")
    for problem in report.problems:
        for name in problem.models:
            click.echo(f"{name}: {problem.kind}: {problem.digest}: {problem.detail}")
    checked = f"{len(report.models)} model(s), {report.blobs} blob(s), {human_bytes(report.bytes_hashed)} hashed"
    if not report.ok:
        names = " ".join(sorted(broken))
        raise NbllmError(
            f"{len(broken)} model(s) failed verification ({checked}); "
            f"remove and pull or create them again: nbllm rm {names}"
        )
    click.echo(f"verified {checked}")
