"""Runs many agents in one process for benchmarks: agent i manages the simulated Ollama node at
``--sim-port + i`` and is called ``bench-<i>``. Prints "ready" once every agent has registered.

    python bench/agent_host.py --etcd URL --namespace NS --sim-port P --first 0 --count 25
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.sidecar.agent import Agent
from agents.sidecar.settings import AgentGroup
from bench.common import run_loop
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace


async def main(args: argparse.Namespace) -> None:
    keys = KeySpace(args.namespace)
    agents, stores = [], []
    for i in range(args.first, args.first + args.count):
        store = EtcdStore(EtcdConfig(endpoints=(args.etcd,)))
        settings = AgentGroup(
            node=f"bench-{i}", ollama_url=f"http://127.0.0.1:{args.sim_port + i}", labels={"pool": "bench"}, port=0,
            probe_interval_s=2.0, resync_interval_s=30.0,
        )  # fmt: skip
        agents.append(Agent(settings, store, keys=keys))
        stores.append(store)
    tasks = [asyncio.create_task(a.run()) for a in agents]
    for _ in range(1200):  # every agent holds its lease (it registered), within a minute
        if all(a.keeper.lease_id for a in agents):
            break
        await asyncio.sleep(0.05)
    gc.freeze()  # as python -m agents.sidecar does after start-up
    print("ready", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for store in stores:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--sim-port", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=25)
    run_loop(main(parser.parse_args()))
