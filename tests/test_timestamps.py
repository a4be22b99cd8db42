"""``created_at``: Go's RFC 3339 (UTC, trailing zeros of the fraction trimmed), fast enough for every token."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from nbllm.schema.common import format_timestamp, now_timestamp

_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def test_now_is_written_as_format_timestamp_writes_it() -> None:
    before = datetime.now(timezone.utc)
    stamp = now_timestamp()
    after = datetime.now(timezone.utc)
    assert _RFC3339_UTC.match(stamp), stamp
    assert not re.search(r"\.\d*0Z$", stamp)  # no trailing zeros, as Go writes it
    whole, _, frac = stamp.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(f"{whole}.{frac.ljust(6, '0')}+00:00")  # (3.10 wants six digits)
    assert before.replace(microsecond=0) <= moment <= after
    assert format_timestamp(moment) == stamp  # the same text for the same instant


def test_a_whole_second_has_no_fraction() -> None:
    assert format_timestamp(datetime(2024, 9, 26, 3, 1, 58, tzinfo=timezone.utc)) == "2024-09-26T03:01:58Z"
