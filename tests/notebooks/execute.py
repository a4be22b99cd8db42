"""Re-execute the walkthrough notebooks and save them with their outputs (what GitHub shows).

``python -m tests.notebooks.execute`` runs every ``notebooks/*.ipynb`` (or the ones named) top to
bottom in a fresh kernel, in the test environment of :mod:`tests.notebooks.harness`, and writes the
outputs and widget state back into the file. A cell that fails stops the run and leaves the file
unchanged. Run it after editing a notebook, then ``scripts/test`` checks that the saved outputs of
the cells not tagged ``nbval-ignore-output`` still come out the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.notebooks.harness import NOTEBOOKS, notebook_environment


def execute(path: Path, *, timeout: int) -> float:
    """Execute one notebook in place; the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        record_timing=False,
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - started
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Execute the notebooks named on the command line (default: all), report the time of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may take")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    with notebook_environment():
        for path in paths:
            print(f"{path.name}: {execute(path, timeout=args.timeout):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
