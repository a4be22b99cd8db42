"""The REPL's ``/`` commands (``/set``, ``/show``, ``/load``, ``/save``, ``/clear``, ``/?``), worded as Ollama's."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from nbllm.cli.turn import load_model
from nbllm.errors import InvalidOption, NbllmError, NotFound
from nbllm.schema import CreateRequest, Message

if TYPE_CHECKING:
    from nbllm.cli.session import Session

__all__ = ["HELP", "dispatch", "go_value"]

HELP = {
    "": """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
""",
    "set": """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
""",
    "show": """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
""",
    "shortcuts": """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + g            Open default editor to compose a prompt
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit nbllm (/bye)
""",
    "parameters": """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters
""",
}
_HELP_TOPICS = {"set": "set", "/set": "set", "show": "show", "/show": "show"}
_HELP_TOPICS.update(shortcut="shortcuts", shortcuts="shortcuts")


def go_value(value: Any) -> str:
    """A parameter value as Go's ``%v`` prints it.

    >>> go_value(0.0), go_value(0.7), go_value(("<|im_end|>", "###")), go_value(True)
    ('0', '0.7', '[<|im_end|> ###]', 'true')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    return str(value)


def _usage(topic: str) -> None:
    click.echo(HELP[topic], err=True)


def _help(session: Session, args: list[str]) -> bool:
    topic = _HELP_TOPICS.get(args[0]) if args else ""
    if topic is not None:
        _usage(topic)
    return True


def _set(session: Session, args: list[str]) -> bool:
    if not args:
        _usage("set")
        return True
    opts, name, rest = session.opts, args[0], args[1:]
    toggles: dict[str, tuple[str, Any, str | None]] = {
        "wordwrap": ("wordwrap", True, "Set 'wordwrap' mode."),
        "nowordwrap": ("wordwrap", False, "Set 'nowordwrap' mode."),
        "verbose": ("verbose", True, "Set 'verbose' mode."),
        "quiet": ("verbose", False, "Set 'quiet' mode."),
        "noformat": ("format", None, "Disabled format."),
        "nothink": ("think", False, "Set 'nothink' mode."),
    }
    if name in toggles:
        attr, value, message = toggles[name]
        setattr(opts, attr, value)
        if name == "nothink":
            _warn_thinking(session)
        click.echo(message)
    elif name in ("history", "nohistory"):
        session.reader.set_history(enabled=name == "history")
    elif name == "think":
        opts.think = rest[0] if rest else True
        _warn_thinking(session)
        click.echo(f"Set 'think' mode to '{rest[0]}'." if rest else "Set 'think' mode.")
    elif name == "format":
        if rest[:1] != ["json"]:
            click.echo("Invalid or missing format. For 'json' mode use '/set format json'")
        else:
            opts.format = "json"
            click.echo("Set format to 'json' mode.")
    elif name == "parameter":
        _set_parameter(session, rest)
    elif name == "system":
        _set_system(session, rest)
    else:
        click.echo(f"Unknown command '/set {name}'. Type /? for help")
    return True


def _set_parameter(session: Session, args: list[str]) -> None:
    from nbllm.options import parse_parameter

    if len(args) < 2:
        _usage("parameters")
        return
    try:
        value = parse_parameter(args[0], args[1:])
    except InvalidOption as exc:
        click.echo(f'Couldn\'t set parameter: "{exc.message}"')
        return
    session.opts.options[args[0]] = list(value) if isinstance(value, tuple) else value
    click.echo(f"Set parameter '{args[0]}' to '{', '.join(args[1:])}'")


def _set_system(session: Session, args: list[str]) -> None:
    if not args:
        _usage("set")
        return
    text = " ".join(args)
    if text.startswith('"""'):
        text = session.until_closing_quotes(text[3:])
    opts = session.opts
    opts.system = text
    message = Message(role="system", content=text)
    if opts.messages and opts.messages[-1].role == "system":
        opts.messages[-1] = message
    else:
        opts.messages.append(message)
    click.echo("Set system message.")


def _warn_thinking(session: Session) -> None:
    try:
        capabilities = session.client.show(session.opts.model).capabilities
    except NbllmError:
        return
    if "thinking" not in capabilities:
        click.echo(f'warning: model "{session.opts.model}" does not support thinking output', err=True)


def _show(session: Session, args: list[str]) -> bool:
    from nbllm.cli.show import format_show

    if not args:
        _usage("show")
        return True
    opts = session.opts
    resp = session.client.show(opts.model, system=opts.system)
    topic = args[0]
    if topic == "info":
        click.echo(format_show(resp, {}), err=True)
    elif topic in ("license", "template"):
        text = resp.license if topic == "license" else resp.template
        click.echo(text or f"No {'license' if topic == 'license' else 'prompt template'} was specified for this model.")
    elif topic == "modelfile":
        click.echo(resp.modelfile)
    elif topic == "system":
        system = opts.system or resp.system
        click.echo(system + "\n" if system else "No system message was specified for this model.")
    elif topic == "parameters":
        click.echo("Model defined parameters:")
        lines = [f"  {line}" for line in (resp.parameters or "").splitlines()]
        click.echo("\n".join(lines) or "  No additional parameters were specified for this model.")
        click.echo("")
        if opts.options:
            click.echo("User defined parameters:")
            for key, value in opts.options.items():
                click.echo(f"  {key:<30} {go_value(value)}")
            click.echo("")
    else:
        click.echo(f"Unknown command '/show {topic}'. Type /? for help")
    return True


def _load(session: Session, args: list[str]) -> bool:

    if len(args) != 1:
        click.echo("Usage:\n  /load <modelname>")
        return True
    opts, previous = session.opts, session.opts.model
    click.echo(f"Loading model '{args[0]}'")
    try:
        info = session.client.show(args[0])
        opts.model = args[0]
        load_model(session.client, opts)
    except NotFound:
        opts.model = previous
        click.echo(f"Couldn't find model '{args[0]}'")
        return True
    opts.messages = []
    opts.loaded_messages = list(info.messages or [])
    return True


def _save(session: Session, args: list[str]) -> bool:
    from nbllm.store import ModelName

    if len(args) != 1:
        click.echo("Usage:\n  /save <modelname>")
        return True
    if not ModelName.is_valid(args[0]):
        click.echo(f"error: The model name '{args[0]}' is invalid")
        return True
    opts = session.opts
    messages = [*opts.loaded_messages, *opts.messages]
    req = CreateRequest.model_validate(
        {
            "model": args[0],
            "from": opts.model,
            "system": opts.system,
            "parameters": opts.options or None,
            "messages": [m.model_dump(exclude_none=True) for m in messages] or None,
        }
    )
    for _ in session.client.create(req):
        pass
    click.echo(f"Created new model '{args[0]}'")
    return True


def _clear(session: Session, args: list[str]) -> bool:
    opts = session.opts
    opts.messages = [Message(role="system", content=opts.system)] if opts.system else []
    click.echo("Cleared session context")
    return True


def _list(session: Session, args: list[str]) -> bool:
    from nbllm.cli.models import list_rows
    from nbllm.humanize import table

    prefix = args[0] if args else None
    click.echo(table(["NAME", "ID", "SIZE", "MODIFIED"], list_rows(session.client.list_models().models, prefix)))
    return True


def _bye(session: Session, args: list[str]) -> bool:
    return False


_COMMANDS: dict[str, Callable[[Session, list[str]], bool]] = {
    "/set": _set,
    "/show": _show,
    "/load": _load,
    "/save": _save,
    "/clear": _clear,
    "/list": _list,
    "/?": _help,
    "/help": _help,
    "/bye": _bye,
    "/exit": _bye,
}


def dispatch(session: Session, line: str) -> bool:
    """Run one ``/`` command; False ends the session."""
    name, *args = line.split()
    handler = _COMMANDS.get(name)
    if handler is None:
        click.echo(f"Unknown command '{name}'. Type /? for help")
        return True
    try:
        return handler(session, args)
    except NbllmError as exc:  # the session goes on, as after a failed answer
        click.echo(f"Error: {exc.message}", err=True)
        return True
