"""``nbllm serve`` with the streaming hand-off's NoWait protocol switched off, for bench.pertoken only.

The stream's thread then iterates the generation itself: it blocks on the request's queue for each token
and hands every item to the event loop (``Feed._put``), the simpler design measured against NoWait.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nbllm.server import feed


def _blocking_step(self: feed.Feed, it: Iterator[Any]) -> Any:
    return next(it)


def main() -> None:
    """Patch the feed, then run nbllm's CLI."""
    feed.Feed._step = _blocking_step  # type: ignore[method-assign]
    from nbllm.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
