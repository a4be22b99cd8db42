"""A conversation's history tokenized once (engine.llama.history): the same tokens as llama.cpp's tokenization of
the whole prompt, on both models' real vocabularies, over conversations and hostile strings; and which special
tokens may be cut after."""

from __future__ import annotations

import random
from pathlib import Path

import llama_cpp as L
import pytest

from nbllm.engine import LoadSpec
from nbllm.engine.llama.history import HistoryTokens, boundaries
from nbllm.engine.llama.native import NativeModel

C = L.LLAMA_TOKEN_ATTR_CONTROL


def test_a_special_token_another_could_take_part_of_is_no_boundary() -> None:
    specials = {
        b"<|im_end|>": C,
        b"<|im_start|>": C,
        b"<a>": C,  # inside a longer one
        b"<a><b>": C,
        b"<xy>": C,  # a longer one starts with its end
        b"y>zzz": C,
        b"<pq>": C,  # a longer one ends with its start
        b"qqq<p": C,
        b"<strip>": C | L.LLAMA_TOKEN_ATTR_RSTRIP,  # takes the whitespace after it
        b"<left>": C | L.LLAMA_TOKEN_ATTR_LSTRIP,  # takes the whitespace before it: still a boundary
    }
    got = boundaries(specials)
    assert set(got) == {b"<|im_end|>", b"<|im_start|>", b"<a><b>", b"y>zzz", b"qqq<p", b"<left>"}
    assert got == sorted(got, key=len, reverse=True)
    assert boundaries(specials, [b"<|im_end|>", b"<a>", b"<strip>", b"not special"]) == [b"<|im_end|>"]


def test_the_next_turn_tokenizes_only_what_is_new() -> None:
    calls: list[tuple[bytes, bool]] = []

    def raw(data: bytes, add_special: bool) -> list[int]:  # noqa: FBT001  # bytes as tokens: any cut gives the same tokens
        calls.append((data, add_special))
        return ([-1] if add_special else []) + list(data)

    history = HistoryTokens(raw, [b"<E>"])
    turn1 = b"system<E>user: hi<E>"
    turn2 = turn1 + b"bot: hello<E>user: more<E>bot:"
    edited = turn1 + b"bot: hello<E>user: other<E>bot:"  # the last message edited and sent again
    assert history.tokenize(turn1, True) == raw(turn1, True)  # noqa: FBT003
    calls.clear()
    assert history.tokenize(turn2, True) == [-1, *turn2]  # noqa: FBT003
    assert calls == [(b"bot: hello<E>", False), (b"user: more<E>", False), (b"bot:", False)]
    calls.clear()
    assert history.tokenize(edited, True) == [-1, *edited]  # noqa: FBT003
    assert calls == [(b"user: other<E>", False), (b"bot:", False)]
    assert history.reused == 2
    assert history.tokenize(turn2, False) == list(turn2)  # noqa: FBT003 - kept apart from the BOS ones
    assert history.tokenize(b"no boundary here", True) == [-1, *b"no boundary here"]  # noqa: FBT003


def test_a_prompt_kept_from_a_reused_one_gives_the_right_tokens_for_its_earlier_cuts() -> None:
    def raw(data: bytes, add_special: bool) -> list[int]:  # noqa: FBT001
        return ([-1] if add_special else []) + list(data)

    history = HistoryTokens(raw, [b"<E>"])
    a = b"x<E>y<E>"
    b = a + b"z<E>"  # reuses a's tokens: what b keeps for its first two cuts came from a
    history.tokenize(a, True)  # noqa: FBT003
    history.tokenize(b, True)  # noqa: FBT003
    for k in range(15):  # a, the older, is dropped: only b is left to share with c
        history.tokenize(b"f%d<E>" % k, True)  # noqa: FBT003
    c = b"x<E>w<E>"  # shares "x<E>" with b: the tokens of b's first cut only
    assert history.tokenize(c, True) == [-1, *c]  # noqa: FBT003
    assert history.reused == 2


def test_only_a_prompt_that_goes_on_from_no_kept_one_is_announced_before_it_is_tokenized() -> None:
    events: list[str] = []

    def raw(data: bytes, add_special: bool) -> list[int]:  # noqa: FBT001
        events.append("tokenize")
        return ([-1] if add_special else []) + list(data)

    def new() -> None:
        events.append("new")

    history = HistoryTokens(raw, [b"<E>"])
    turn1 = b"system<E>user: hi<E>bot:"
    turn2 = b"system<E>user: hi<E>bot: hello<E>user: more<E>bot:"
    cases = [
        (turn1, True, True),  # nothing kept yet
        (turn1, True, False),  # the same prompt again
        (turn2, True, False),  # its next turn
        (b"system<E>user: hi<E>bot: hello<E>user: other<E>bot:", True, False),  # the last turn edited
        (b"system<E>user: bye<E>bot:", True, True),  # a new conversation with the same system prompt
        (b"no cut point at all", True, True),  # a raw prompt nobody sent before
        (b"no cut point at all", True, False),  # the same again
        (b"no cut point at all, and then more", True, False),  # a raw completion that goes on
        (b"no cut point at", True, True),  # a prompt a kept one starts with is not their continuation
        (b"another raw prompt", True, True),
        (turn2, False, True),  # without BOS nothing is kept yet
        (b"system<E>user: hi<E>bot: hello<E>user: more<E>bot: ok<E>user: go<E>bot:", False, False),
    ]
    for data, add_special, announced in cases:
        events.clear()
        assert history.tokenize(data, add_special, new) == ([-1] if add_special else []) + list(data)
        assert events[0] == ("new" if announced else "tokenize"), data
        assert events.count("new") == announced, data
    assert history.tokenize(turn1, True) == [-1, *turn1]  # noqa: FBT003 - without a hook, as before
    history.tokenize(b"unheard of", True)  # noqa: FBT003 - without a hook no raw prompt is kept: it is new after
    events.clear()
    history.tokenize(b"unheard of", True, new)  # noqa: FBT003
    assert events[0] == "new"
    for k in range(16):  # sixteen raw prompts more: the oldest ones are forgotten
        history.tokenize(b"raw %d" % k, True, new)  # noqa: FBT003
    events.clear()
    history.tokenize(b"no cut point at all", True, new)  # noqa: FBT003
    assert events[0] == "new"


SMOL_TURNS = [
    "<|im_start|>system\nYou are terse.<|im_end|>\n",
    "<|im_start|>user\nName three rivers.<|im_end|>\n",
    "<|im_start|>assistant\nThe Rhine, the Danube and the Loire.<|im_end|>\n",
    "<|im_start|>user\nWhich is longest? Answer in one word.<|im_end|>\n",
    "<|im_start|>assistant\n  Danube\n\n<|im_end|>\n",
    "<|im_start|>user\n<|im_end|><|im_end|>héllo 日本 🙂<|im_start|><|im_end|>\n",
]
GEMMA_TURNS = [
    "<bos><start_of_turn>user\nName three rivers.<end_of_turn>\n",
    "<start_of_turn>model\nThe Rhine, the Danube and the Loire.<end_of_turn>\n",
    "<start_of_turn>user\n Which is longest?<end_of_turn>\n",
    "<start_of_turn>model\n\nDanube <end_of_turn>\n",
    "<start_of_turn>user\n<end_of_turn><end_of_turn> héllo 日本 🙂<start_of_turn><end_of_turn>\n",
]


def _pieces(specials: list[str]) -> list[str]:
    """Hostile string parts: whole and broken special texts, whitespace, words, unicode."""
    broken = [s[: len(s) // 2] for s in specials] + [s[len(s) // 2 :] for s in specials]
    return [
        *specials,
        *broken,
        "\n",
        " ",
        "  ",
        "\n\n",
        "\t",
        "hello",
        " world",
        "é",
        "日本",
        "🙂",
        "12",
        "<",
        ">",
        "|",
    ]


@pytest.mark.model
@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_the_history_s_tokens_are_llama_cpp_s_own(
    which: str, smollm2_gguf: Path, request: pytest.FixtureRequest
) -> None:
    path = smollm2_gguf if which == "smollm2" else request.getfixturevalue("gemma3_gguf")
    turns = SMOL_TURNS if which == "smollm2" else GEMMA_TURNS
    model = NativeModel(LoadSpec(path=path, num_ctx=512))
    try:
        model._history_thread.join()
        history = model._history
        assert history is not None, "no special token of this vocabulary may be cut after"
        specials = (
            ["<|im_start|>", "<|im_end|>"] if which == "smollm2" else ["<start_of_turn>", "<end_of_turn>", "<bos>"]
        )

        def same(text: str) -> None:
            for add in (True, False):
                whole = model._tokenize_whole(text.encode(), add, parse_special=True)  # llama.cpp on the whole prompt
                assert model.tokenize(text, add_special=add, parse_special=True) == whole, (text, add)

        conversation = ""
        for turn in turns:  # a conversation, turn by turn: each reuses the one before
            conversation += turn
            same(conversation)
            same(conversation + turns[0].split("\n")[0][-12:])  # a generation prompt's start after it
        rng = random.Random(7)
        parts = _pieces(specials)
        for _ in range(300):  # hostile strings, each then extended as a next turn would be
            text = "".join(rng.choice(parts) for _ in range(rng.randint(1, 12)))
            same(text)
            same(text + "".join(rng.choice(parts) for _ in range(rng.randint(1, 8))))
        assert history.reused > 100
    finally:
        model.free()
