"""Hostile and heavy clients against a running router and control plane, one run: for each attack,
the target's RSS growth and its ``/healthz`` latency while the attack runs, against the same with
no attack; then the router's added latency for a well-behaved client with 100 slow clients
connected, against none. Goals: RSS growth under 20 MB per attack, ``/healthz`` p99 under 50 ms
during every attack, the well-behaved client's latency unchanged within noise.

    python bench/abuse.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.common import pct, rss_mb, run_loop
from bench.router_stack import running

Attack = Callable[[str, asyncio.Event], Awaitable[None]]
CHAT = b'{"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": false}'


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def huge_url(url: str, stop: asyncio.Event) -> None:
    """A 64 MB request target, again and again (414 at 8 KiB)."""
    line = b"GET /api/tags?" + b"q" * (1 << 20)
    while not stop.is_set():
        reader, writer = await _open(url)
        with contextlib.suppress(ConnectionError):
            writer.write(line)
            for _ in range(64):
                writer.write(b"q" * (1 << 20))
                await writer.drain()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.read(100), 2)
        _close(writer)


async def many_headers(url: str, stop: asyncio.Event) -> None:
    """30,000 header fields per request (431 past 100)."""
    head = b"GET /api/tags HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30_000)) + b"\r\n"
    while not stop.is_set():
        reader, writer = await _open(url)
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            await asyncio.wait_for(reader.read(100), 2)
        _close(writer)


async def pipelined_bodies(url: str, stop: asyncio.Event) -> None:
    """Four connections, each with 16 pipelined 16 MiB bodies queued behind the first answer."""
    body = b"x" * (16 << 20)
    request = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)

    async def one() -> None:
        _, writer = await _open(url)
        with contextlib.suppress(ConnectionError, TimeoutError):
            for _ in range(16):
                if stop.is_set():
                    break
                writer.write(request)
                await asyncio.wait_for(writer.drain(), 1)
        await stop.wait()
        _close(writer)

    await asyncio.gather(*(one() for _ in range(4)))


async def idle_connections(url: str, stop: asyncio.Event, count: int = 500) -> None:
    """``count`` connections, each 200 KB into a body it never finishes."""
    writers = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            _, writer = await _open(url)
            writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000)
            writers.append(writer)
    await stop.wait()
    for writer in writers:
        _close(writer)


async def one_byte_chunks(url: str, stop: asyncio.Event) -> None:
    """Request bodies of 4 MB sent as one-byte chunks."""
    while not stop.is_set():
        reader, writer = await _open(url)
        with contextlib.suppress(ConnectionError):
            writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(64):
                writer.write(b"1\r\nx\r\n" * 65536)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(100), 5)
        _close(writer)


async def never_reading(url: str, stop: asyncio.Event) -> None:
    """16 clients that start a streamed answer and never read it."""
    stream = CHAT.replace(b'"stream": false', b'"stream": true')
    writers = []
    for _ in range(16):
        _, writer = await _open(url)
        writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(stream), stream))
        writers.append(writer)
    await stop.wait()
    for writer in writers:
        _close(writer)


async def unauthenticated_bodies(url: str, stop: asyncio.Event) -> None:
    """Four unauthenticated 19.7 MiB POSTs to the control plane, again and again (401 first)."""
    body = b"{" + b" " * int(19.7 * (1 << 20)) + b"}"

    async def one() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    await client.post("/api/v1/config:apply", content=body, headers={"content-type": "application/json"})

    await asyncio.gather(*(one() for _ in range(4)))


async def stalled_watchers(url: str, stop: asyncio.Event, token: str = "bench-token") -> None:
    """Eight ``/watch`` clients that stop reading, while the configuration changes."""
    writers = []
    for _ in range(8):
        _, writer = await _open(url)
        writer.write(f"GET /api/v1/watch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        writers.append(writer)
    async with httpx.AsyncClient(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        i = 0
        while not stop.is_set():
            model = {"kind": "Model", "metadata": {"name": f"churn-{i % 20}"},
                     "spec": {"ollama_tag": "llama3.2:1b", "capabilities": ["chat"], "context_window": 8192,
                              "placement": {"min_replicas": 0}, "system_prompt": "x" * 20_000}}  # fmt: skip
            with contextlib.suppress(httpx.HTTPError):
                await client.put(f"/api/v1/config/models/churn-{i % 20}", json=model)
            i += 1
    for writer in writers:
        _close(writer)


async def probe(url: str, seconds: float) -> list[float]:
    out, deadline = [], time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/healthz")
            out.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
    return out


async def under(attack: Attack, target: str, pid: int, seconds: float) -> tuple[float, list[float]]:
    before, stop = rss_mb(pid), asyncio.Event()
    task = asyncio.create_task(attack(target, stop))
    await asyncio.sleep(0.5)
    latencies, peak = [], before
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        latencies += await probe(target, 0.5)
        peak = max(peak, rss_mb(pid))
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 15)
    return peak - before, latencies


async def chat_latency(url: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(n):
            started = time.perf_counter()
            resp = await client.post("/api/chat", content=CHAT)
            assert resp.status_code == 200, resp.text
            out.append((time.perf_counter() - started) * 1000)
    return out


async def slow_clients(url: str, stop: asyncio.Event) -> None:
    """100 clients sending their request a byte per second (never finished)."""
    writers = []
    for _ in range(100):
        _, writer = await _open(url)
        writers.append(writer)
    while not stop.is_set():
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.write(b"P")
        await asyncio.sleep(1)
    for writer in writers:
        _close(writer)


async def bench(router: str, api: str, pids: dict[str, int], seconds: float, *, only: str = "") -> None:
    attacks: list[tuple[str, str, Attack]] = [
        ("router", "64 MB request targets", huge_url),
        ("router", "30,000 header fields", many_headers),
        ("router", "16 x 16 MiB pipelined bodies x 4", pipelined_bodies),
        ("router", "500 connections x 200 KB", idle_connections),
        ("router", "4 MB bodies of 1-byte chunks", one_byte_chunks),
        ("router", "16 streams never read", never_reading),
        ("control plane", "4 unauthenticated 19.7 MiB POSTs", unauthenticated_bodies),
        ("control plane", "8 stalled /watch clients + churn", stalled_watchers),
    ]
    attacks = [a for a in attacks if only in a[1]]
    urls = {"router": router, "control plane": api}
    pid_of = {"router": pids["router"], "control plane": pids["controlplane"]}
    quiet = {name: await probe(url, seconds) for name, url in urls.items()}
    print(f"{'target':14s} {'attack':36s} {'RSS +MB':>8s} {'healthz p50':>12s} {'p99 ms':>8s}")
    for name, values in quiet.items():
        rss = rss_mb(pid_of[name])
        print(f"{name:14s} {'(none: baseline)':36s} {0:8.1f} {pct(values, 50):12.2f} {pct(values, 99):8.2f}  RSS {rss:.0f} MB")
    worst_rss, worst_p99 = 0.0, 0.0
    for name, label, attack in attacks:
        grew, latencies = await under(attack, urls[name], pid_of[name], seconds)
        worst_rss, worst_p99 = max(worst_rss, grew), max(worst_p99, pct(latencies, 99))
        print(f"{name:14s} {label:36s} {grew:8.1f} {pct(latencies, 50):12.2f} {pct(latencies, 99):8.2f}")
    print(f"worst: RSS +{worst_rss:.1f} MB (goal < 20), /healthz p99 {worst_p99:.2f} ms (goal < 50)")
    await chat_latency(router, 50)  # warm
    calm = await chat_latency(router, 300)
    stop = asyncio.Event()
    task = asyncio.create_task(slow_clients(router, stop))
    await asyncio.sleep(1)
    crowded = await chat_latency(router, 300)
    stop.set()
    await task
    print(f"well-behaved client through the router: p50 {pct(calm, 50):.2f} / p99 {pct(calm, 99):.2f} ms alone, "
          f"p50 {pct(crowded, 50):.2f} / p99 {pct(crowded, 99):.2f} ms with 100 slow clients connected "
          f"(x{pct(crowded, 50) / pct(calm, 50):.2f} p50)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--only", default="", help="run only attacks whose name contains this")
    args = parser.parse_args()
    with running(sim_token_s=0.001, litellm=False) as stack:
        run_loop(bench(stack.router, stack.api, stack.pids, args.seconds, only=args.only))


if __name__ == "__main__":
    main()
