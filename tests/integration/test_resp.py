"""The router's Redis client against a real Redis: commands and pipelines, a password and a
database from the URL, a reconnect after the server drops it, a script Redis forgot, a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from router.auth import Caller
from router.limits import Limiter, RateLimited
from router.resp import Resp, RespError
from schemas.apikey import KeyBudgets, KeyLimits
from tests.fixtures.services import RedisServer


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()  # its own: a password is set on it
    server.start()
    yield server
    server.close()


async def test_commands_pipelines_auth_database_and_reconnect(redis: RedisServer) -> None:
    plain = Resp(redis.url)
    assert await plain.call("SET", "k", "v") == b"OK" and await plain.call("GET", "k") == b"v"
    assert await plain.pipeline([("INCRBY", "n", 2), ("INCRBY", "n", 3), ("GET", "nope")]) == [2, 5, None]
    with pytest.raises(RespError, match="wrong number of arguments"):
        await plain.call("GET")
    await plain.call("CONFIG", "SET", "requirepass", "s3cret")
    with pytest.raises(RespError):  # the connection it had is authenticated; a new one needs the password
        await Resp(redis.url).call("PING")
    with pytest.raises(RespError, match="refused the connection"):
        await Resp(f"redis://:wrong@127.0.0.1:{redis.port}/0").call("PING")
    good = Resp(f"redis://:s3cret@127.0.0.1:{redis.port}/3")
    assert await good.call("SET", "db3", "x") == b"OK"
    assert await plain.call("GET", "db3") is None  # another database
    assert "s3cret" not in repr(good)
    await plain.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await asyncio.sleep(0.05)
    assert await good.call("PING") == b"PONG"  # its connection was dropped: the next call connected again
    slow = Resp(f"redis://:s3cret@127.0.0.1:{redis.port}/0", timeout_s=0.2)
    with pytest.raises(RespError, match="did not answer within"):
        await slow.call("BLPOP", "nothing-here", "1")  # blocks for a second
    assert await slow.call("PING") == b"PONG"
    for client in (plain, good, slow):
        await client.close()


async def test_the_limits_script_survives_a_redis_that_forgot_it(redis: RedisServer) -> None:
    limiter = Limiter(redis.url, registry=CollectorRegistry())
    caller = Caller("k", "llmk_x", "t", ("*",), ("*",), (), "normal", KeyLimits(requests_per_minute=2), KeyBudgets(), None)
    assert await limiter.admit(caller, "r1", 1) is not None
    await Resp(redis.url).call("SCRIPT", "FLUSH")
    assert await limiter.admit(caller, "r2", 1) is not None
    with pytest.raises(RateLimited):
        await limiter.admit(caller, "r3", 1)
    await limiter.close()
