"""OpenAI Responses request shapes (``POST /v1/responses``), stateless as Ollama serves them.

The input items and content parts are tagged unions on ``type`` (a ``{"role", "content"}`` item
without one is a message, as in OpenAI's shorthand); an unknown tag or a value of the wrong JSON
type is a 400. Responses and stream events are built as plain dicts in ``service.responses``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from nbllm.schema.common import UnicodeChecked

__all__ = [
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "InputFile",
    "InputImage",
    "InputItem",
    "InputMessage",
    "InputText",
    "OutputText",
    "ReasoningItem",
    "ResponsesReasoning",
    "ResponsesRequest",
    "ResponsesText",
    "ResponsesTextFormat",
    "ResponsesTool",
]


class _Loose(UnicodeChecked, BaseModel):  # (BaseModel named: linters see a pydantic model)
    model_config = ConfigDict(extra="ignore")


def _part_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


class InputText(_Loose):
    """A text part of an input message."""

    type: Literal["input_text"]
    text: str
    """The text."""


class OutputText(_Loose):
    """A text part of an earlier assistant message passed back as history."""

    type: Literal["output_text"]
    text: str
    """The text."""


class InputImage(_Loose):
    """An image part: a base64 ``data:`` URL (file ids and http(s) URLs are refused, as by Ollama)."""

    type: Literal["input_image"]
    image_url: str | None = None
    """``data:image/...;base64,...``."""
    file_id: str | None = None
    """Files are not stored: refused."""
    detail: str | None = None
    """Accepted and ignored."""


class InputFile(_Loose):
    """A file part: refused (``file inputs are not currently supported``), as by Ollama."""

    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


ContentPart = Annotated[
    Annotated[InputText, Tag("input_text")]
    | Annotated[OutputText, Tag("output_text")]
    | Annotated[InputImage, Tag("input_image")]
    | Annotated[InputFile, Tag("input_file")],
    Discriminator(
        _part_tag,
        custom_error_type="invalid_part",
        custom_error_message="unknown content type (expected input_text, output_text, input_image or input_file)",
    ),
]


_STRING, _ARRAY = "(string)", "(array)"
"""Tags of the string-or-array unions: never a field name, so ``_where`` can leave them out of a path."""


def _text_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return _STRING
    return _ARRAY if isinstance(value, list | tuple) else None


def _string_or_array(what: str) -> Discriminator:
    return Discriminator(
        _text_or_list,
        custom_error_type="string_or_array",
        custom_error_message=f"expected a string or an array of {what}",
    )


Content = Annotated[
    Annotated[str, Tag(_STRING)] | Annotated[list[ContentPart], Tag(_ARRAY)], _string_or_array("content parts")
]
"""Text, or a list of content parts (a string or an array; any other JSON type is a 400 about the array)."""


class InputMessage(_Loose):
    """A message item: ``user``, ``system``, ``developer`` (a system message) or ``assistant``."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    """Who speaks."""
    content: Content
    """Text, or a list of content parts."""


class FunctionCallItem(_Loose):
    """An earlier function call of the assistant, passed back as history."""

    type: Literal["function_call"]
    call_id: str
    """The call's id, which the matching ``function_call_output`` names."""
    name: str
    """The function called."""
    arguments: str = ""
    """The arguments as a JSON text (an object)."""
    id: str | None = None
    """The output item's id (ignored)."""


class FunctionCallOutputItem(_Loose):
    """The result of a function call, sent by the client."""

    type: Literal["function_call_output"]
    call_id: str
    """The ``call_id`` of the call this answers."""
    output: Content
    """The result: text, or content parts."""


class ReasoningItem(_Loose):
    """Earlier reasoning passed back as history: its text goes to the next assistant turn's thinking."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] | None = None
    """Summary parts (``summary_text``); ignored, as by Ollama."""
    encrypted_content: str | None = None
    """The reasoning text (Ollama writes it here in plain text)."""


def _item_tag(value: Any) -> str | None:
    """The tag of an input item; a ``{"role", "content"}`` object without ``type`` is a message."""
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None and "role" in value:
            return "message"
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(
        _item_tag,
        custom_error_type="invalid_item",
        custom_error_message=(
            "unknown input item type (expected message, function_call, function_call_output or reasoning)"
        ),
    ),
]
"""One item of ``input``."""


class ResponsesTool(_Loose):
    """A function tool, flat as the Responses API writes it (no ``function`` wrapper)."""

    type: str = "function"
    """Only ``function`` tools are served."""
    name: str = ""
    """Function name."""
    description: str | None = None
    """What the function does."""
    parameters: dict[str, Any] | None = None
    """JSON schema of the arguments object."""
    strict: bool | None = None
    """Echoed back; the arguments always follow the schema's shape when a call is forced."""


class ResponsesTextFormat(_Loose):
    """``text.format``: ``text``, ``json_object`` or ``json_schema``."""

    type: str = "text"
    """The kind of output."""
    name: str | None = None
    """Name of the schema (echoed back)."""
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    """The JSON schema the answer must follow (``json_schema``)."""
    strict: bool | None = None
    """Echoed back."""


class ResponsesText(_Loose):
    """``text``: the output's format."""

    format: ResponsesTextFormat | None = None
    """The output format."""


class ResponsesReasoning(_Loose):
    """``reasoning``: effort (mapped to ``think``) and summary (echoed)."""

    effort: str | None = None
    """``none``, ``minimal``, ``low``, ``medium``, ``high``, ``xhigh``, ``max`` or ``ultra``."""
    summary: str | None = None
    """Echoed back; the whole thinking is the summary."""
    generate_summary: str | None = None
    """Deprecated alias of ``summary``; ignored."""


_TAGS = {_STRING, _ARRAY, "message", "function_call", "function_call_output", "reasoning"} | {
    "input_text",
    "output_text",
    "input_image",
    "input_file",
}


def _where(loc: tuple[int | str, ...]) -> str:
    """A field's path as a client wrote it, the union tags pydantic puts in it left out.

    >>> _where(("input", "(array)", 0, "message", "content", "(array)", 1, "input_text", "text"))
    'input[0].content[1].text'
    """
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in (_STRING, _ARRAY) or (part in _TAGS and i > 0 and isinstance(loc[i - 1], int)):
            continue
        else:
            out += f".{part}" if out else part
    return out


class ResponsesRequest(_Loose):
    """Body of ``/v1/responses``."""

    model: str = ""
    """Model name."""
    input: Annotated[
        Annotated[str, Tag(_STRING)] | Annotated[list[InputItem], Tag(_ARRAY)], _string_or_array("input items")
    ] = ""
    """A user message, or a list of input items (messages, function calls and their outputs)."""
    instructions: str | None = None
    """A system message put before the input."""
    tools: list[ResponsesTool] | None = None
    """Function tools the model may call."""
    tool_choice: str | dict[str, Any] | None = None
    """``auto``, ``none``, ``required`` or ``{"type": "function", "name": ...}`` (an nbllm extra; Ollama ignores it)."""
    text: ResponsesText | None = None
    """Output format (``text.format``)."""
    reasoning: ResponsesReasoning | None = None
    """Reasoning effort (``think``) and summary."""
    temperature: float | None = None
    """Sampling temperature (1.0 when unset, as OpenAI)."""
    top_p: float | None = None
    """Nucleus sampling (the model's default when unset, as Ollama)."""
    max_output_tokens: int | None = None
    """Most tokens to generate (``num_predict``)."""
    stream: bool = False
    """Stream server-sent events."""
    truncation: str | None = None
    """``auto`` drops old turns to fit the context; ``disabled`` refuses an input that does not fit."""
    store: bool | None = None
    """Nothing is stored: accepted, answered with ``store: false``."""
    previous_response_id: str | None = None
    """Refused: responses are not stored (send the whole input)."""
    conversation: str | dict[str, Any] | None = None
    """Refused: conversations are not stored."""
    background: bool | None = None
    """Refused when true: there is no store to fetch a background response from."""
    include: list[str] | None = None
    """Accepted and ignored."""
    metadata: dict[str, Any] | None = None
    """Echoed back."""
    options: dict[str, Any] | None = None
    """nbllm extension: Ollama ``options`` (``extra_body={"options": {...}}`` in OpenAI's client)."""

    @model_validator(mode="wrap")
    @classmethod
    def _plain_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """One message that names the field as the client wrote it (``input[0].content``), not pydantic's path."""
        try:
            return handler(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = _where(tuple(first["loc"]))
            if not where:
                raise
            raise ValueError(f"invalid value for field {where!r}: {first['msg']}") from None
