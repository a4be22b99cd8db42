"""nbllm in Jupyter: ``%load_ext nbllm`` registers the magics and one ``post_run_cell`` callback (``{Err}``).

Line magics: ``%pull``, ``%list``, ``%show``, ``%ps``, ``%stop``, ``%rm``, ``%serve``, ``%timings``, ``%threads``,
``%bench``; cell magics: ``%%chat`` and ``%%generate``. IPython, ipywidgets and pandas are imported
only when the extension loads or a function here is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from nbllm.notebook.magics import NbllmMagics
    from nbllm.notebook.session import NotebookSession

__all__ = ["get_magics", "get_session", "load_ipython_extension", "timings", "unload_ipython_extension"]

_REGISTRY_KEY = "NbllmMagics"


def load_ipython_extension(ipython: Any, *, session: NotebookSession | None = None) -> NbllmMagics:
    """Register nbllm's magics on ``ipython`` (what ``%load_ext nbllm`` calls) and the callback keeping ``{Err}``.

    nbllm's loggers get a handler that drops records (``%serve --log FILE`` writes them to a file),
    so that the in-kernel server's warnings never land in whichever cell ran last.
    """
    from nbllm.notebook.magics import NbllmMagics

    instance = NbllmMagics(shell=ipython, session=session)
    instance.session.capture_logs()
    line_table = ipython.magics_manager.magics["line"]
    instance.shadowed = {name: line_table[name] for name in instance.magics["line"] if name in line_table}
    _set_default_aliases(ipython, instance, hide=True)
    ipython.register_magics(instance)
    ipython.events.register("post_run_cell", instance.errors.record)  # for {Err} in prompts
    return instance


def _set_default_aliases(ipython: Any, instance: NbllmMagics, *, hide: bool) -> None:
    """Keep IPython from re-defining its shell alias ``rm`` over ``%rm`` (it tries on ``%reset``, and logs an error)."""
    aliases = getattr(ipython, "alias_manager", None)
    if aliases is None:
        return
    if hide:
        names = set(instance.magics["line"])
        instance.shadowed_aliases = [a for a in aliases.default_aliases if a[0] in names]
        aliases.default_aliases = [a for a in aliases.default_aliases if a[0] not in names]
    else:
        aliases.default_aliases = [*aliases.default_aliases, *instance.shadowed_aliases]


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics, restore magics they shadowed (``%rm``), stop the in-kernel server."""
    manager = ipython.magics_manager
    instance = manager.registry.pop(_REGISTRY_KEY, None)
    if instance is None:
        return
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        for name in instance.magics[kind]:
            table.pop(name, None)
    manager.magics["line"].update(instance.shadowed)
    if instance.errors.record in ipython.events.callbacks["post_run_cell"]:
        ipython.events.unregister("post_run_cell", instance.errors.record)
    _set_default_aliases(ipython, instance, hide=False)
    if instance in getattr(ipython, "configurables", []):
        ipython.configurables.remove(instance)
    instance.session.close()


def get_magics(ipython: Any = None) -> NbllmMagics | None:
    """The loaded extension's magics instance (None when ``%load_ext nbllm`` has not run)."""
    if ipython is None:
        from IPython import get_ipython

        ipython = get_ipython()
    if ipython is None:
        return None
    instance: NbllmMagics | None = ipython.magics_manager.registry.get(_REGISTRY_KEY)
    return instance


def get_session(ipython: Any = None) -> NotebookSession:
    """The notebook session of the loaded extension (threads, tool calls, timings, server)."""
    instance = get_magics(ipython)
    if instance is None:
        raise RuntimeError("nbllm's extension is not loaded: run %load_ext nbllm first")
    return instance.session


def timings(ipython: Any = None) -> pd.DataFrame:
    """Timing stats of every response in this notebook (empty before ``%load_ext nbllm``); ``.plot()`` compares."""
    instance = get_magics(ipython)
    if instance is None:
        from nbllm.notebook.timing import timing_frame

        return timing_frame([])
    return instance.session.timings.frame()
