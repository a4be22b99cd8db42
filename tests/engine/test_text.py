"""Releasing streamed text: stop strings across token boundaries, split UTF-8 characters."""

from __future__ import annotations

import codecs
import random

from nbllm.engine.text import StreamText


def test_stop_string_split_over_tokens() -> None:
    s = StreamText(["<|im_end|>"])
    out = [s.feed(p) for p in [b"Hi", b" there", b"<|im", b"_en", b"d|>", b"more"]]
    assert out == ["Hi", " there", "", "", "", ""]
    assert s.stopped and s.text == "Hi there"


def test_false_alarm_is_released() -> None:
    s = StreamText(["STOP"])
    assert s.feed(b"ST") == ""
    assert s.feed(b"AY") == "STAY"


def test_earliest_of_several_stops_wins() -> None:
    s = StreamText(["b", "abc"])
    assert s.feed(b"xabcd") == "x"  # "abc" starts before "b"


def test_held_prefix_is_flushed_at_the_end() -> None:
    s = StreamText(["END"])
    assert s.feed(b"the E") == "the "
    assert s.flush() == "E"


def test_multibyte_characters_split_across_tokens() -> None:
    s = StreamText([])
    data = "你好".encode()
    assert [s.feed(data[i : i + 1]) for i in range(len(data))] == ["", "", "你", "", "", "好"]


def test_a_cut_character_is_dropped_at_the_end() -> None:
    s = StreamText([])
    assert s.feed("é".encode()[:1]) == ""
    assert s.flush() == ""


def test_pieces_cut_anywhere_give_what_one_incremental_decoder_gives() -> None:
    """Whole pieces skip the incremental decoder; the text must not change for it (invalid bytes included)."""
    data = "Grüße, 你好 👋 done. ".encode() * 3 + b"\xff\xfe bad \xe2\x82 cut " + "ok é".encode()
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 30)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        reference = codecs.getincrementaldecoder("utf-8")(errors="replace")
        want = "".join(reference.decode(p) for p in pieces)
        for stops in ([], ["👋 x"]):  # without stop strings, and with one that never completes
            s = StreamText(stops)
            got = "".join(s.feed(p) for p in pieces) + s.flush()
            assert got == want and s.text == want, (pieces, stops)
