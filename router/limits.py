"""Rate limits and token budgets of API keys (and budgets of tenants), counted in Redis so that they
hold across router replicas: one server-side script per request checks every limit and counts the
request at once (fixed windows: a minute for requests and tokens, the UTC day and month for
budgets; exact within a window however many routers share the Redis). Prompt tokens are counted
when a request is admitted (the router's estimate), completion tokens when its answer ends
(``settle``: batched, off the request's path). Requests in flight are a sorted set of request ids
that expire, so a router that dies cannot hold a key's slots for ever.

When Redis cannot be reached, each router enforces its share of each rate limit in process
(the limit divided by the routers alive, from their load reports) and says so in
``llmtune_router_limits_local``; budgets then go unchecked. ``on_redis_down`` chooses that
(``local``), no limits (``open``) or refusing limited keys (``closed``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from router.auth import Caller
from router.resp import Resp, RespError
from schemas.apikey import KeyBudgets

log = logging.getLogger(__name__)
OnRedisDown = Literal["local", "open", "closed"]
ROOMY = 200  # thousandths of a limit left at the last check that let the next one overlap the upstream
IN_FLIGHT_TTL_MS = 15 * 60 * 1000  # a request slot no settle released (its router died) frees itself after this
_PREFIX = "llmtune:limits"
_DAY_TTL_S, _MONTH_TTL_S = 2 * 86_400, 32 * 86_400
#: The script's refusal codes: what the message names, and the metric label.
_WHAT = {1: ("requests per minute", "requests_per_minute"), 2: ("tokens per minute", "tokens_per_minute"),
         3: ("concurrent requests", "concurrent"), 4: ("tokens per day", "tokens_per_day"),
         5: ("tokens per month", "tokens_per_month"), 6: ("the tenant's tokens per day", "tenant_tokens_per_day"),
         7: ("the tenant's tokens per month", "tenant_tokens_per_month")}  # fmt: skip

# KEYS: 1 requests this minute, 2 tokens this minute, 3 requests in flight (zset), 4 key today,
#       5 key this month, 6 tenant today, 7 tenant this month
# ARGV: 1-7 the limit of each (0: none), 8 prompt tokens, 9 now (ms), 10 request id, 11 in-flight ttl (ms),
#       12 day ttl (s), 13 month ttl (s)
# Returns {refused limit (0: admitted), requests counted this minute, tokens counted this minute,
#          the room left under the tightest limit in thousandths (0 when refused)}.
_SCRIPT = """
local prompt, now = tonumber(ARGV[8]), tonumber(ARGV[9])
local function used(k) return tonumber(redis.call('GET', k) or '0') end
local limit = {}
for i = 1, 7 do limit[i] = tonumber(ARGV[i]) end
local requests, tokens = 0, 0
if limit[1] > 0 then requests = used(KEYS[1]); if requests >= limit[1] then return {1, requests, 0, 0} end end
if limit[2] > 0 then tokens = used(KEYS[2]); if tokens + prompt > limit[2] then return {2, requests, tokens, 0} end end
local inflight = 0
if limit[3] > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[3])
  if inflight >= limit[3] then return {3, requests, tokens, 0} end
end
local spent = {}
for i = 4, 7 do
  if limit[i] > 0 then spent[i] = used(KEYS[i]); if spent[i] >= limit[i] then return {i, requests, tokens, 0} end end
end
local room = 1000
local function left(n, l) if l > 0 then room = math.min(room, math.floor(1000 * (l - n) / l)) end end
if limit[1] > 0 then requests = redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], 120); left(requests, limit[1]) end
if limit[2] > 0 then
  tokens = redis.call('INCRBY', KEYS[2], prompt); redis.call('EXPIRE', KEYS[2], 120); left(tokens, limit[2])
end
if limit[3] > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[11]), ARGV[10])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[11]))
  left(inflight + 1, limit[3])
end
for i = 4, 7 do
  if limit[i] > 0 then
    left(redis.call('INCRBY', KEYS[i], prompt), limit[i])
    redis.call('EXPIRE', KEYS[i], (i % 2 == 0) and tonumber(ARGV[12]) or tonumber(ARGV[13]))
  end
end
return {0, requests, tokens, room}
"""


_SHA = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()  # Redis names scripts by their SHA-1


class RateLimited(Exception):
    """A limit of the caller's key (or its tenant's budget) is reached (429)."""

    def __init__(self, message: str, *, retry_after_s: int, headers: Mapping[str, str], budget: bool) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers
        self.budget = budget  # a token budget (OpenAI: insufficient_quota), not a rate


class LimitsUnavailable(Exception):
    """Redis cannot be reached and the router is set to refuse limited keys then (503)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A request counted against its key's limits: what settles it when the answer ends."""

    caller: Caller
    request_id: str
    prompt_tokens: int
    keys: tuple[str, ...]  # the Redis keys counted (tokens this minute, budgets), empty: counted in process
    in_flight_key: str | None
    headers: Mapping[str, str] = field(default_factory=dict)  # x-ratelimit-* for the answer
    local: bool = False


def _windows(now: float) -> tuple[int, str, str, int, int, int]:
    """The minute, the UTC day and month, and the seconds until each ends."""
    minute = int(now // 60)
    day, month, day_end, month_end = _calendar(minute)
    return minute, day, month, 60 - int(now % 60), int(day_end - now) + 1, int(month_end - now) + 1


@functools.lru_cache(maxsize=4)
def _calendar(minute: int) -> tuple[str, str, float, float]:
    """The UTC day and month a minute falls in, and when each ends: worked out once a minute, not
    per request."""
    moment = datetime.fromtimestamp(minute * 60, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day_end = (minute * 60 // 86_400 + 1) * 86_400
    return moment.strftime("%Y%m%d"), moment.strftime("%Y%m"), day_end, datetime(year, month, 1, tzinfo=UTC).timestamp()


def ratelimit_headers(caller: Caller, requests: int, tokens: int, reset_s: int) -> dict[str, str]:
    """OpenAI's names (its SDKs and most gateways read them): limit, remaining and reset per kind."""
    out: dict[str, str] = {}
    limits = caller.limits
    if limits.requests_per_minute:
        out["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
        out["x-ratelimit-remaining-requests"] = str(max(0, limits.requests_per_minute - requests))
        out["x-ratelimit-reset-requests"] = f"{reset_s}s"
    if limits.tokens_per_minute:
        out["x-ratelimit-limit-tokens"] = str(limits.tokens_per_minute)
        out["x-ratelimit-remaining-tokens"] = str(max(0, limits.tokens_per_minute - tokens))
        out["x-ratelimit-reset-tokens"] = f"{reset_s}s"
    return out


def door_headers(headers: Mapping[str, str], dialect: str) -> Mapping[str, str]:
    """OpenAI's names on its door; elsewhere the common ``x-ratelimit-limit|remaining|reset`` of the
    tighter kind (requests if limited, else tokens), and both kinds' OpenAI names beside them."""
    if dialect == "openai" or not headers:
        return headers
    kind = "requests" if "x-ratelimit-limit-requests" in headers else "tokens"
    out = dict(headers)
    for part in ("limit", "remaining", "reset"):
        value = headers.get(f"x-ratelimit-{part}-{kind}")
        if value is not None:
            out[f"x-ratelimit-{part}"] = value.removesuffix("s") if part == "reset" else value
    return out


class LocalShare:
    """A key's rate limits in process while Redis is away: this router's share of each."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], list[int]] = {}  # (key, minute) -> [requests, tokens]
        self._in_flight: dict[str, int] = {}

    def admit(self, caller: Caller, prompt: int, routers: int, now: float) -> tuple[int, int, int]:
        """(refused limit or 0, requests, tokens) against limit / routers."""
        minute = int(now // 60)
        counts = self._counts.setdefault((caller.name, minute), [0, 0])
        if len(self._counts) > 10_000:  # old minutes go
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= minute}
        share = max(1, routers)
        limits = caller.limits
        if limits.requests_per_minute and counts[0] >= math.ceil(limits.requests_per_minute / share):
            return 1, counts[0], counts[1]
        if limits.tokens_per_minute and counts[1] + prompt > math.ceil(limits.tokens_per_minute / share):
            return 2, counts[0], counts[1]
        if limits.concurrent and self._in_flight.get(caller.name, 0) >= math.ceil(limits.concurrent / share):
            return 3, counts[0], counts[1]
        counts[0] += 1
        counts[1] += prompt
        self._in_flight[caller.name] = self._in_flight.get(caller.name, 0) + 1
        return 0, counts[0], counts[1]

    def settle(self, caller: Caller, completion: int, now: float) -> None:
        counts = self._counts.get((caller.name, int(now // 60)))
        if counts is not None:
            counts[1] += completion
        left = self._in_flight.get(caller.name, 1) - 1
        if left > 0:
            self._in_flight[caller.name] = left
        else:
            self._in_flight.pop(caller.name, None)


class Limiter:
    """Checks and counts requests of keys with limits or budgets (others never reach Redis)."""

    def __init__(
        self, url: str | None, *, registry: CollectorRegistry, routers: Callable[[], int] = lambda: 1,
        tenant_budgets: Callable[[str], KeyBudgets | None] = lambda _t: None, on_redis_down: OnRedisDown = "local",
        clock: Callable[[], float] = time.time, settle_every_s: float = 0.05,
    ) -> None:  # fmt: skip
        self._redis = Resp(url, timeout_s=1.0) if url else None
        self._routers, self._tenant_budgets, self._on_down, self._clock = routers, tenant_budgets, on_redis_down, clock
        self._local = LocalShare()
        self._pending: list[tuple[Admission, int]] = []
        self._every = settle_every_s
        self._away_until = 0.0  # after a failure Redis is tried again at most once a second
        self.is_local = self._redis is None  # without a shared Redis, each router counts its share alone
        self._room: dict[str, tuple[float, int]] = {}  # key name -> (when, room left in thousandths) at its last check
        self._task: asyncio.Task[None] | None = None
        self.local = Gauge("llmtune_router_limits_local", "1 while limits are this router's share (Redis away or unset)",
                           registry=registry)  # fmt: skip
        self.local.set(int(self.is_local))
        self.refused = Counter("llmtune_router_limited", "Requests refused by a key's limit or budget", ["limit"],
                               registry=registry)  # fmt: skip
        Gauge("llmtune_router_limits_routers", "Routers reporting load: each enforces limit / this while Redis is away",
              registry=registry).set_function(lambda: float(routers()))  # fmt: skip

    def applies(self, caller: Caller) -> bool:
        limits, budgets = caller.limits, caller.budgets
        return bool(
            limits.requests_per_minute or limits.tokens_per_minute or limits.concurrent or budgets.tokens_per_day
            or budgets.tokens_per_month or self._tenant_budgets(caller.tenant)
        )  # fmt: skip

    def roomy(self, caller: Caller) -> bool:
        """Whether the key's last check (under a second ago) left at least a fifth of every limit:
        then its next check may run while the request goes upstream (the answer waits for it).
        Counting stays exact: a refused request is cut off before its first byte reaches the client,
        at the cost of a node's first moments of work in the rare race with other routers."""
        last = self._room.get(caller.name)
        return self._redis is not None and last is not None and last[1] >= ROOMY and self._clock() - last[0] < 1.0

    async def admit(self, caller: Caller, request_id: str, prompt_tokens: int) -> Admission | None:
        """Count the request of a key that has limits (``applies``); RateLimited when one is
        reached. None: Redis is away and the setting is ``open``."""
        now = self._clock()
        if self._redis is not None and now >= self._away_until:
            try:
                return await self._admit_redis(caller, request_id, prompt_tokens, now)
            except RespError as exc:
                self._down(exc, now)
        if self._on_down == "open":
            return None
        if self._on_down == "closed" and self._redis is not None:
            raise LimitsUnavailable("the rate-limit store cannot be reached; requests of keys with limits wait for it")
        refused, requests, tokens = self._local.admit(caller, prompt_tokens, self._routers(), now)
        reset = 60 - int(now % 60)
        headers = ratelimit_headers(caller, requests, tokens, reset)
        if refused:
            self._refuse(caller, refused, reset, headers)
        return Admission(caller, request_id, prompt_tokens, (), None, headers, local=True)

    def _down(self, exc: BaseException, now: float) -> None:
        self._away_until = now + 1.0
        if not self.is_local:
            log.warning("rate limits: Redis cannot be reached (%s); limits are this router's share until it is back", exc)
        self.is_local = True
        self.local.set(1)

    async def _admit_redis(self, caller: Caller, request_id: str, prompt: int, now: float) -> Admission:
        minute, day, month, reset, day_left, month_left = _windows(now)
        name = caller.name
        keys = [f"{_PREFIX}:k:{name}:r:{minute}", f"{_PREFIX}:k:{name}:t:{minute}", f"{_PREFIX}:k:{name}:inflight",
                f"{_PREFIX}:k:{name}:d:{day}", f"{_PREFIX}:k:{name}:m:{month}",
                f"{_PREFIX}:t:{caller.tenant}:d:{day}", f"{_PREFIX}:t:{caller.tenant}:m:{month}"]  # fmt: skip
        limits, budgets = caller.limits, caller.budgets
        tenant = self._tenant_budgets(caller.tenant) or KeyBudgets()
        args = [limits.requests_per_minute or 0, limits.tokens_per_minute or 0, limits.concurrent or 0,
                budgets.tokens_per_day or 0, budgets.tokens_per_month or 0, tenant.tokens_per_day or 0,
                tenant.tokens_per_month or 0, prompt, int(now * 1000), request_id, IN_FLIGHT_TTL_MS, _DAY_TTL_S,
                _MONTH_TTL_S]  # fmt: skip
        assert self._redis is not None
        refused, requests, tokens, room = (int(v) for v in await self._redis.script(_SHA, _SCRIPT, keys, args))
        if len(self._room) > 10_000:
            self._room.clear()
        self._room[name] = (now, room)
        if self.is_local:
            log.warning("rate limits: Redis is back; limits hold across routers again")
            self.is_local = False
            self.local.set(0)
        headers = ratelimit_headers(caller, requests, tokens, reset)
        if refused:
            self._refuse(caller, refused, {4: day_left, 6: day_left, 5: month_left, 7: month_left}.get(refused, reset), headers)
        counted = tuple(k for k, limit in zip([keys[1], *keys[3:]], [args[1], *args[3:7]], strict=True) if limit)
        return Admission(caller, request_id, prompt, counted, keys[2] if limits.concurrent else None, headers)

    def _refuse(self, caller: Caller, refused: int, retry_after_s: int, headers: Mapping[str, str]) -> None:
        what, label = _WHAT[refused]
        self.refused.labels(label).inc()
        budget = refused >= 4
        whose = f"tenant '{caller.tenant}'" if refused >= 6 else f"key {caller.prefix} ('{caller.name}')"
        raise RateLimited(
            f"{whose} reached its limit of {what}; retry in {retry_after_s} s",
            retry_after_s=max(1, retry_after_s), headers={**headers, "retry-after": str(max(1, retry_after_s))}, budget=budget,
        )  # fmt: skip

    def settle(self, admission: Admission | None, completion_tokens: int, prompt_tokens: int | None = None) -> None:
        """The answer ended: count its completion tokens (and the prompt's actual count against the
        estimate) and free its slot; sent in batches."""
        if admission is None:
            return
        extra = completion_tokens + ((prompt_tokens - admission.prompt_tokens) if prompt_tokens is not None else 0)
        if admission.local:
            self._local.settle(admission.caller, max(0, extra), self._clock())
            return
        if not admission.in_flight_key and not (admission.keys and extra):
            return  # nothing to count: requests-per-minute alone was counted on admission
        self._pending.append((admission, extra))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        """Send what waits to be settled, in one pipeline per ``settle_every_s``, until nothing waits."""
        while self._pending:
            await asyncio.sleep(self._every)
            pending, self._pending = self._pending, []
            commands: list[tuple[Any, ...]] = []
            for admission, extra in pending:
                if extra:
                    commands.extend(("INCRBY", key, extra) for key in admission.keys)
                if admission.in_flight_key is not None:
                    commands.append(("ZREM", admission.in_flight_key, admission.request_id))
            try:
                assert self._redis is not None
                await self._redis.pipeline(commands)
            except RespError as exc:  # the counts are lost; slots free themselves after IN_FLIGHT_TTL_MS
                log.warning("rate limits: %d answers not settled (%s)", len(pending), exc)

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._redis is not None:
            await self._redis.close()
