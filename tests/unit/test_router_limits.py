"""The parts of rate limiting that need no Redis: windows, header names per door, a router's local share."""

from __future__ import annotations

from datetime import UTC, datetime

from router.auth import Caller
from router.limits import LocalShare, _windows, door_headers, ratelimit_headers
from schemas.apikey import KeyBudgets, KeyLimits


def caller(**limits: int) -> Caller:
    return Caller("k", "llmk_x", "t", ("*",), ("*",), (), "normal", KeyLimits(**limits), KeyBudgets(), None)


def test_windows_end_at_the_minute_the_utc_day_and_the_month() -> None:
    now = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp()
    minute, day, month, reset, day_left, month_left = _windows(now)
    assert (day, month, reset) == ("20261231", "202612", 30) and minute == int(now // 60)
    assert day_left == month_left == 31  # the year's last day: both end at midnight


def test_header_names_per_door() -> None:
    headers = ratelimit_headers(caller(requests_per_minute=10, tokens_per_minute=1000), 3, 200, 42)
    assert headers == {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "7",
                       "x-ratelimit-reset-requests": "42s", "x-ratelimit-limit-tokens": "1000",
                       "x-ratelimit-remaining-tokens": "800", "x-ratelimit-reset-tokens": "42s"}  # fmt: skip
    assert door_headers(headers, "openai") == headers
    ollama = door_headers(headers, "ollama")
    assert (ollama["x-ratelimit-limit"], ollama["x-ratelimit-remaining"], ollama["x-ratelimit-reset"]) == ("10", "7", "42")
    tokens_only = door_headers(ratelimit_headers(caller(tokens_per_minute=100), 0, 30, 5), "native")
    assert tokens_only["x-ratelimit-remaining"] == "70"


def test_local_share_is_the_limit_over_the_routers_alive() -> None:
    share, key, now = LocalShare(), caller(requests_per_minute=10), 1_000_000.0
    assert [share.admit(key, 1, 3, now)[0] for _ in range(5)] == [0, 0, 0, 0, 1]  # ceil(10 / 3) = 4 this minute
    assert share.admit(key, 1, 3, now + 60)[0] == 0  # a new minute
    slots, two = LocalShare(), caller(concurrent=4)
    assert [slots.admit(two, 1, 3, now)[0] for _ in range(3)] == [0, 0, 3]  # ceil(4 / 3) = 2 at once
    slots.settle(two, 5, now)
    assert slots.admit(two, 1, 3, now)[0] == 0
