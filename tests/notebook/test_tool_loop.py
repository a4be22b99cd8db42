"""The tool loop against scripted chat answers (fast), and against the real model through ``%%chat``."""

from __future__ import annotations

from collections.abc import Iterator

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.client import BaseClient
from nbllm.notebook.chat import CellContext, run_chat
from nbllm.notebook.magic_args import ChatArgs
from nbllm.notebook.magics import NbllmMagics
from nbllm.notebook.session import NotebookSession
from nbllm.schema import ChatRequest, ChatResponse, Message, ToolCall, ToolCallFunction
from tests.notebook.shellrun import cell


class ScriptedClient(BaseClient):
    """Answers each chat request with the next scripted message; records the requests."""

    host = "scripted"

    def __init__(self, replies: list[Message]) -> None:
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []

    def _chat(self, req: ChatRequest) -> Iterator[ChatResponse]:
        self.requests.append(req)
        reply = self.replies.pop(0)
        for word in reply.content.split(" "):
            yield ChatResponse(model=req.model, created_at="now", message=Message(role="assistant", content=word + " "))
        yield ChatResponse(
            model=req.model,
            created_at="now",
            message=Message(role="assistant", content="", tool_calls=reply.tool_calls),
            done=True,
            done_reason="stop",
            eval_count=3,
            eval_duration=1_000_000,
        )

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"unexpected call {name}")


ScriptedClient.__abstractmethods__ = frozenset()


def _call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(id=f"call_{name}", function=ToolCallFunction(name=name, arguments=arguments))


def test_tool_calls_run_and_feed_back_until_the_final_answer(shell: InteractiveShell) -> None:
    calls: list[tuple[str, int]] = []

    def weather(city: str, days: int = 1) -> dict[str, object]:
        """Forecast.

        Args:
            city: City name.
            days: How many days.
        """
        calls.append((city, days))
        return {"city": city, "sky": "clear"}

    client = ScriptedClient(
        [
            Message(role="assistant", content="Let me check.", tool_calls=[_call("weather", city="Oslo", days="2")]),
            Message(role="assistant", content="", tool_calls=[_call("weather", city="Bergen"), _call("nope")]),
            Message(role="assistant", content="Clear skies in Oslo and Bergen."),
        ]
    )
    session = NotebookSession()
    ctx = CellContext(client=client, session=session, namespace={"weather": weather}, interval=0.0)
    args = ChatArgs(tools=("weather",), tool_choice="required", thread="t")
    with capture_output():
        result = run_chat(ctx, args, "m", "Weather in Oslo and Bergen?")

    assert calls == [("Oslo", 2), ("Bergen", 1)]  # "2" validated and coerced to int
    assert result.text == "Clear skies in Oslo and Bergen. "
    assert [r.name for r in result.tool_calls] == ["weather", "weather", "nope"]
    assert result.tool_calls[2].error is not None
    first, second, third = client.requests
    assert [t.function.name for t in first.tools or []] == ["weather"]
    assert first.tool_choice == "required" and second.tool_choice is None  # forced only in the first round
    tool_msgs = [m for m in third.messages or [] if m.role == "tool"]
    assert [(m.tool_name, m.tool_call_id) for m in tool_msgs] == [
        ("weather", "call_weather"),
        ("weather", "call_weather"),
        ("nope", "call_nope"),
    ]
    assert tool_msgs[0].content == '{"city": "Oslo", "sky": "clear"}'
    assert tool_msgs[2].content.startswith("error: LookupError: no tool named 'nope'")
    roles = [m.role for m in session.threads["t"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "tool", "assistant"]
    assert len(result.timings) == 3 and len(session.timings) == 3
    inspector = result.inspector
    assert [c.record.name for c in inspector.cards] == ["weather", "weather", "nope"]
    assert "weather(city='Oslo', days='2') → {\"city\": \"Oslo\"" in result.markdown  # as the model sent them


def test_tool_rounds_are_bounded(shell: InteractiveShell) -> None:
    loop = Message(role="assistant", content="again", tool_calls=[_call("ping")])
    client = ScriptedClient([loop] * 3)
    ctx = CellContext(
        client=client, session=NotebookSession(), namespace={"ping": lambda: "pong"}, interval=0.0, max_tool_rounds=2
    )
    with capture_output():
        result = run_chat(ctx, ChatArgs(tools=("ping",)), "m", "go")
    assert len(client.requests) == 3
    assert "stopped after 2 rounds of tool calls" in result.markdown


def test_inspector_reruns_a_call_with_edited_arguments(shell: InteractiveShell) -> None:
    def mul(a: int, b: int) -> int:
        """Multiply."""
        return a * b

    client = ScriptedClient(
        [
            Message(role="assistant", content="", tool_calls=[_call("mul", a=6, b=7)]),
            Message(role="assistant", content="42"),
        ]
    )
    ctx = CellContext(client=client, session=NotebookSession(), namespace={"mul": mul}, interval=0.0)
    with capture_output():
        card = run_chat(ctx, ChatArgs(tools=("mul",)), "m", "6*7?").inspector.cards[0]
    assert card.result.value == "42"
    assert '"a": 6' in card.arguments.value
    card.arguments.value = '{"a": 2, "b": 5}'
    card.rerun.click()
    assert (card.result.value, card.record.result, card.record.reruns) == ("10", 10, 1)
    assert "re-run 1×" in card.title.value
    card.arguments.value = '{"a": 2,'
    card.rerun.click()
    assert card.result.value.startswith("arguments are not valid JSON")
    card.arguments.value = '{"a": "x", "b": 1}'
    card.rerun.click()
    assert card.result.value.startswith("error: invalid arguments: a:")
    assert card.title.value.startswith("<code>✗ mul")


def test_real_model_calls_a_notebook_function(shell: InteractiveShell, nb: NbllmMagics) -> None:
    seen: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first number.
            b: The second number.
        """
        seen.append((a, b))
        return a + b

    shell.user_ns["add"] = add
    run = cell(
        shell,
        "chat",
        "--new --thread tools --tools add --tool-choice required -o temperature=0 -o num_predict=48 --var r",
        "What is 17 + 25? Use the add tool.",
    )
    result = shell.user_ns["r"]
    assert seen, "the model's tool call was not executed"
    assert result.tool_calls[0].name == "add"
    a, b = seen[0]
    assert result.tool_calls[0].result == a + b
    card = result.inspector.cards[0]
    assert card.result.value == str(a + b)
    assert card.record.duration_s >= 0
    thread = nb.session.threads["tools"]
    tool_msgs = [m for m in thread if m.role == "tool"]
    assert tool_msgs and tool_msgs[0].tool_name == "add" and tool_msgs[0].content == str(a + b)
    assert thread[1].tool_calls and thread[1].tool_calls[0].function.name == "add"
    assert len(result.timings) >= 2  # the call, then the answer with the result
    meta = run.final.metadata["nbllm"]
    assert meta["thread"] == "tools" and len(meta["timings"]) == len(result.timings)
    assert "🔧 `add(" in run.final.data["text/markdown"]
