"""Releasing streamed text: stop strings across token boundaries, split UTF-8 characters."""

from __future__ import annotations

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
