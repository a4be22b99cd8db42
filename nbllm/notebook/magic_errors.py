"""How the magics fail: nbllm errors as one-line ``UsageError``s, ``-h`` as the help, interrupts without a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics

from nbllm.errors import NbllmError, NotFound
from nbllm.notebook.display import Note
from nbllm.notebook.magic_args import ShowHelp

__all__ = ["friendly", "quiet_interrupt"]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn nbllm errors into one-line UsageErrors; ``-h`` shows the help; interrupts stop quietly."""

    @functools.wraps(fn)
    def wrapper(self: Magics, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except KeyboardInterrupt:
            raise quiet_interrupt(self.shell) from None
        except ShowHelp as exc:
            return Note(exc.text)
        except NotFound as exc:
            raise UsageError(f"{exc.message} (pull it with %pull)" if "model" in exc.message else exc.message) from None
        except NbllmError as exc:
            notes = getattr(self, "host_notes", {})  # --host words read as host names: no profile had them
            raise UsageError(" ".join([exc.message, *(n for url, n in notes.items() if url in exc.message)])) from None

    return wrapper  # type: ignore[return-value]


def quiet_interrupt(shell: Any) -> KeyboardInterrupt:
    """A KeyboardInterrupt that fails the cell (so Run All stops there) but shows no traceback.

    What the magic showed (the partial answer and its "interrupted" footer) stays the cell's only
    output, as Ctrl-C in ``ollama run``. IPython hands exceptions listed in ``custom_exceptions`` to
    ``CustomTB`` instead of printing a traceback; ours is set for this cell only and the previous
    handler is put back when the cell ends.
    """
    exc = KeyboardInterrupt()
    if shell is None or not hasattr(shell, "set_custom_exc") or not hasattr(shell, "events"):
        return exc
    saved_types, saved_handler = shell.custom_exceptions, shell.CustomTB

    def handler(sh: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: Any = None) -> Any:
        if value is exc:
            return None  # the cell fails with nothing printed
        if isinstance(value, saved_types):
            return saved_handler(etype, value, tb, tb_offset=tb_offset)
        sh.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None

    def restore(*_args: Any) -> None:
        shell.custom_exceptions, shell.CustomTB = saved_types, saved_handler
        shell.events.unregister("post_run_cell", restore)

    shell.set_custom_exc((*saved_types, KeyboardInterrupt), handler)
    shell.events.register("post_run_cell", restore)
    return exc
