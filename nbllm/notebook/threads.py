"""``%%chat --thread NAME --persist`` and ``%threads``: conversations that outlive the kernel.

A persistent thread is saved in ``<NBLLM_HOME>/threads/NAME.json`` (:mod:`nbllm.store.threads`) after
each completed exchange; an interrupted or failed one is not saved, as it is not added to the thread.
In a new kernel the same cell line continues it: the saved messages come back, and so do the model (when
the cell names none), the options (the cell's win) and ``think``. When the cell is answered in this kernel
(in-process, or by ``%serve``'s server), ``--persist`` also turns the runtime's KV snapshots on (as
``NBLLM_KV_SNAPSHOTS=1``; docs/kv-snapshots.md), so the history's keys and values come back from the store
instead of being evaluated again. A server elsewhere (``--host``) keeps its own snapshots when it runs with
that setting; the messages are saved here either way.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from nbllm.client import IN_PROCESS
from nbllm.notebook.display import Note
from nbllm.notebook.magic_args import ChatArgs, ThreadsArgs
from nbllm.notebook.session import NotebookSession
from nbllm.schema import Message
from nbllm.store.threads import SavedThread, ThreadStore, check_name

__all__ = ["resume_thread", "save_thread", "thread_store", "threads_magic"]

log = logging.getLogger(__name__)


def thread_store(session: NotebookSession) -> ThreadStore:
    """The thread files of the session's ``NBLLM_HOME``."""
    return ThreadStore(session.settings.home / "threads")


def resume_thread(session: NotebookSession, args: ChatArgs, default_model: str, host: str) -> ChatArgs:
    """A ``--persist`` cell's arguments completed from its saved thread, whose messages the session takes.

    A bad name or a damaged file raises before anything is sent (and nothing is written).
    """
    saved = thread_store(session).load(check_name(args.thread))
    if saved is not None and not args.new:
        session.threads[args.thread] = list(saved.messages)
        model = args.models[0] if args.models else saved.model
        args = dataclasses.replace(
            args,
            models=(model,),
            options={**saved.options, **args.options},
            think=args.think if args.think is not None else saved.think,
        )
    model = args.models[0] if args.models else default_model
    server = session.server
    here = host == IN_PROCESS or (server is not None and server.running and host == server.url)
    if here and not session.keep_kv_snapshots(model):
        log.info("the session's runtime was given to it: KV snapshots stay as its settings say")
    return dataclasses.replace(args, models=(model,))


def save_thread(session: NotebookSession, args: ChatArgs, model: str, messages: list[Message], host: str) -> None:
    """Save a completed exchange of a ``--persist`` thread (atomically)."""
    thread = SavedThread(
        name=args.thread,
        model=model,
        messages=tuple(messages),
        options=dict(args.options),
        think=args.think,
        host=None if host == IN_PROCESS else host,
    )
    thread_store(session).save(thread)


def threads_magic(session: NotebookSession, args: ThreadsArgs) -> Any:
    """``%threads``: the saved threads (a DataFrame), or ``--delete NAME``."""
    store = thread_store(session)
    if args.delete is not None:
        found = store.delete(args.delete)
        session.threads.pop(args.delete, None)
        return Note(f"deleted thread {args.delete!r}" if found else f"no saved thread {args.delete!r}")
    import pandas as pd

    rows = []
    for name, item in store.all():
        path = store.path(name)
        if isinstance(item, SavedThread):
            row = {"name": name, "model": item.model, "turns": item.turns, "host": item.host or "", "error": ""}
            row["updated"] = item.updated
        else:
            row = {"name": name, "model": "", "turns": None, "host": "", "updated": None, "error": item.message}
        rows.append({**row, "bytes": path.stat().st_size if path.exists() else None})
    columns = ["name", "model", "turns", "bytes", "host", "updated", "error"]
    frame = pd.DataFrame(rows, columns=columns).astype({"turns": "Int64", "bytes": "Int64"})
    frame.attrs["folder"] = str(store.root)
    return frame
