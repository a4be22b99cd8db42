"""Ollama's output formats, checked line by line: ps/list rows, progress bars, word wrap, show's summary."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

from nbllm.cli.answer import AnswerWriter, WordWrapper
from nbllm.cli.models import list_rows, ps_rows
from nbllm.cli.progress import bar_line, render_progress
from nbllm.cli.show import format_show
from nbllm.humanize import table
from nbllm.schema import ModelDetails, ModelSummary, ProcessModel, ProgressResponse, ShowResponse

NOW = datetime(2024, 9, 26, 3, 0, 0, tzinfo=timezone.utc)
DIGEST = "370739dc897bba0188d390bb7659e48d926cacc320875136d0115228023b1590"


def _running(name: str, size: int, vram: int, expires: datetime, processor: str | None = None) -> ProcessModel:
    return ProcessModel(
        name=name,
        model=name,
        size=size,
        digest=DIGEST,
        details=ModelDetails(),
        expires_at=expires.isoformat(),
        size_vram=vram,
        context_length=2048,
        processor=processor,
    )


def test_ps_table_as_the_seed_shows_it() -> None:
    forever = datetime(2317, 1, 5, 12, 51, 5, tzinfo=timezone.utc)  # what Ollama sends for keep_alive < 0
    rows = ps_rows(
        [
            _running("vicuna:7b", 9_360_795_648, 9_360_795_648, forever),
            _running("glm4:9b", 6_600_000_000, 6_600_000_000, NOW + timedelta(minutes=4, seconds=59)),
        ],
        now=NOW,
    )
    assert table(["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"], rows).splitlines() == [
        "NAME         ID              SIZE      PROCESSOR    UNTIL",
        "vicuna:7b    370739dc897b    9.4 GB    100% GPU     Forever",
        "glm4:9b      370739dc897b    6.6 GB    100% GPU     4 minutes from now",
    ]


def test_ps_processor_split_and_stopping() -> None:
    rows = ps_rows(
        [
            _running("a:1b", 1000, 520, NOW + timedelta(seconds=30)),
            _running("b:1b", 1000, 0, NOW - timedelta(seconds=1)),
            _running("c:1b", 1000, 0, NOW + timedelta(hours=1), processor="100% CPU"),
        ],
        now=NOW,
    )
    assert [r[3:] for r in rows] == [
        ["48%/52% CPU/GPU", "30 seconds from now"],
        ["100% CPU", "Stopping..."],
        ["100% CPU", "About an hour from now"],
    ]


def test_list_rows_as_the_seed_shows_them() -> None:
    def summary(name: str, size: int, age: timedelta) -> ModelSummary:
        modified = (datetime.now(timezone.utc) - age).isoformat()
        details = ModelDetails()
        return ModelSummary(name=name, model=name, modified_at=modified, size=size, digest=DIGEST, details=details)

    models = [
        summary("llama3.2:1b", 1_321_098_329, timedelta(seconds=33, milliseconds=400)),
        summary("vicuna:7b", 3_825_807_726, timedelta(hours=20, minutes=10)),
        summary("glm4:9b", 5_455_326_235, timedelta(hours=22)),
    ]
    assert table(["NAME", "ID", "SIZE", "MODIFIED"], list_rows(models)).splitlines() == [
        "NAME           ID              SIZE      MODIFIED",
        "llama3.2:1b    370739dc897b    1.3 GB    33 seconds ago",
        "vicuna:7b      370739dc897b    3.8 GB    20 hours ago",
        "glm4:9b        370739dc897b    5.5 GB    22 hours ago",
    ]
    assert [r[0] for r in list_rows(models, "VIC")] == ["vicuna:7b"]


def test_pull_progress_as_the_seed_shows_it() -> None:
    layers = [("b506a070d115", 5_455_000_000), ("e7e7aebd710c", 137), ("e4f0dc83900a", 6_500), ("4134f3eb0516", 81)]
    events = [ProgressResponse(status="pulling manifest")]
    for short, size in layers:
        digest = "sha256:" + short + "0" * 52
        events += [
            ProgressResponse(status=f"pulling {short}", digest=digest, total=size, completed=0),
            ProgressResponse(status=f"pulling {short}", digest=digest, total=size, completed=size // 2),
            ProgressResponse(status=f"pulling {short}", digest=digest, total=size, completed=size),
        ]
    events += [ProgressResponse(status=s) for s in ("verifying sha256 digest", "writing manifest", "success")]
    out = io.StringIO()
    render_progress(events, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest" and lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    bars = lines[1:-3]
    assert [b.split("▏ ")[1] for b in bars] == ["5.5 GB", " 137 B", "6.5 KB", "  81 B"]
    assert all(b.startswith(f"pulling {short}... 100% ▕█") for b, (short, _) in zip(bars, layers, strict=True))
    assert len({b.index("▏") for b in bars}) == 1  # the bars line up
    assert len({len(bar_line(f"{label}...", 5, 5)) for label in ("pulling abc", "copying file", "x")}) == 1


def test_progress_on_a_terminal_redraws_one_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    digest = "sha256:" + "ab" * 32
    render_progress(
        [ProgressResponse(status="pulling abababababab", digest=digest, total=100, completed=c) for c in (0, 50, 100)]
        + [ProgressResponse(status="success")],
        out,
    )
    text = out.getvalue()
    assert text.count("\n") == 2 and text.endswith("success\n")
    assert text.startswith("\rpulling abababababab...  50% ▕") and "\x1b[K" in text
    assert " 0% " not in text  # the 0% announcement is not drawn, as in Ollama


def test_bar_while_running_shows_sizes_and_speed() -> None:
    line = bar_line("pulling 4134f3eb0516...", 10_000_000, 98_000_000, width=100, rate=2_000_000)
    assert line.startswith("pulling 4134f3eb0516...  10% ▕")
    assert line.endswith("▏  10 MB/ 98 MB    2 MB/s     44s") and len(line) == 99


def test_word_wrap_keeps_words_whole_and_lines_short() -> None:
    text = "Paris is the capital and most populous city of France, with an estimated population of 2,102,650 "
    wrap = WordWrapper(30)
    out = "".join(wrap.feed(text[i : i + 3]) for i in range(0, len(text), 3)) + wrap.flush()
    assert out.split() == text.split()
    assert all(len(line) <= 30 for line in out.splitlines()) and len(out.splitlines()) == 4


def test_answer_writer_marks_thinking() -> None:
    out = io.StringIO()
    writer = AnswerWriter(wordwrap=True, out=out)
    writer.thinking("Let me see.")
    writer.content("Paris.")
    writer.finish()
    assert out.getvalue() == "Thinking...\nLet me see.\n...done thinking.\n\nParis."


def test_show_summary_block() -> None:
    resp = ShowResponse(
        details=ModelDetails(family="chatglm", parameter_size="9.4B", quantization_level="Q4_0"),
        model_info={
            "general.architecture": "chatglm",
            "chatglm.context_length": 131072,
            "chatglm.embedding_length": 4096,
        },
        capabilities=["completion"],
        parameters='stop                           "<|system|>"\nstop                           "<|user|>"',
        system="You are a helpful assistant.",
        license="The glm-4-9b License\n\n1. Definitions\n2. Grant",
    )
    assert format_show(resp, {}) == (
        "  Model\n"
        "    architecture        chatglm\n"
        "    parameters          9.4B\n"
        "    context length      131072\n"
        "    embedding length    4096\n"
        "    quantization        Q4_0\n"
        "\n"
        "  Capabilities\n"
        "    completion\n"
        "\n"
        "  Parameters\n"
        '    stop    "<|system|>"\n'
        '    stop    "<|user|>"\n'
        "\n"
        "  System\n"
        "    You are a helpful assistant.\n"
        "\n"
        "  License\n"
        "    The glm-4-9b License\n"
        "    1. Definitions\n"
        "    ...\n"
    )
