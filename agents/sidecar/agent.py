"""The sidecar agent: registration under a lease, the config informer, one worker that reconciles
and probes the node, start-time settings (restart when supervising Ollama), and the lease-bound
status key.

One writer (client-go's worker pattern): the informers, the placement and the timers only put
work on a queue (``agents.sidecar.workqueue``); one worker takes it and alone changes what the
agent knows of its node and publishes it. A probe that comes while a pass runs (a pull may take
minutes) publishes the pass's progress instead of looking at Ollama, so an observation never
races a pass that changes the node.

The agent writes nothing but ``nodes/<node>`` and ``status/<node>``, both bound to its lease, so a
dead agent's node disappears from the fleet within the lease TTL. Status is written only when
its content changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from agents.sidecar.artifacts import ArtifactFetcher
from agents.sidecar.desired import Desired, DesiredState
from agents.sidecar.gguf_memory import DEFAULT_CTX, Estimator
from agents.sidecar.node import Observed, OllamaFailed, OllamaNode, OllamaUnavailable
from agents.sidecar.placed import Placed
from agents.sidecar.reconcile import Reconciler
from agents.sidecar.restart import Restarts
from agents.sidecar.settings import AgentGroup
from agents.sidecar.supervisor import OllamaProcess
from agents.sidecar.workqueue import Work, WorkQueue
from controlplane.store.base import ConfigStore
from controlplane.store.errors import StoreError
from controlplane.store.informer import Informer, Snapshot
from controlplane.store.keys import KeySpace
from controlplane.store.leases import LeaseKeeper
from controlplane.store.view_metrics import InvalidObjectsCollector
from schemas.nodepool import ServerSettings, parallel_slots
from schemas.status import Capacity, LoadedModel, MemoryEstimate, NodeLoad, NodeRegistration, NodeStatus

log = logging.getLogger(__name__)
AGENT_VERSION = "0.1.0"


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.passes = Counter("llmtune_agent_reconcile_passes", "Reconcile passes", ["result"], registry=registry)
        self.pass_seconds = Histogram("llmtune_agent_reconcile_seconds", "Duration of a reconcile pass", registry=registry)
        self.ollama_up = Gauge("llmtune_agent_ollama_up", "1 when Ollama answers", registry=registry)
        self.applied = Gauge("llmtune_agent_applied_revision", "Configuration revision fully applied", registry=registry)
        self.loaded = Gauge("llmtune_agent_models_loaded", "Models loaded in Ollama", registry=registry)
        self.status_writes = Counter("llmtune_agent_status_writes", "Status key writes", registry=registry)


class Agent:
    def __init__(
        self,
        settings: AgentGroup,
        store: ConfigStore,
        *,
        keys: KeySpace,
        registry: CollectorRegistry | None = None,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.store, self.keys = store, keys
        token = settings.control_plane_token.get_secret_value() if settings.control_plane_token else None
        fetcher = ArtifactFetcher(settings.control_plane_url, token) if settings.control_plane_url else None
        self.node = OllamaNode(settings.ollama_url, artifacts=fetcher)
        self.reconciler = Reconciler(self.node)
        self.keeper = LeaseKeeper(store, ttl_s=settings.lease_ttl_s)
        self.informer = Informer(store, keys.config_prefix(), idle_timeout_s=idle_timeout_s, epoch_key=keys.epoch())
        self.informer.add_handler(self._on_snapshot)
        self.desired = DesiredState(keys)
        self.placed = Placed(store, keys, settings.node, drain_s=settings.drain_s, idle_timeout_s=idle_timeout_s)
        self.placed.listeners.append(self._reconcile_soon)
        self.process = OllamaProcess(settings.ollama_command, self.node) if settings.ollama_command else None
        self.restarts = Restarts(store, keys, settings.node, drain_s=settings.drain_s, ttl_s=settings.lease_ttl_s,
                                 loads=self.placed.loads) if self.process else None  # fmt: skip
        self.registry = registry or CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.registry.register(InvalidObjectsCollector(self.desired.view))
        self.applied_revision = 0
        self.observed: Observed | None = None
        self.draining = False
        self.restart_pending = False  # a restart of the supervised Ollama waits (for its turn or replicas elsewhere)
        self.restart_waiting: list[str] = []  # autoscaled models it waits for
        self.estimator = Estimator(settings.ollama_models_dir)
        self.estimates: dict[str, MemoryEstimate] = {}
        self._estimated: tuple[object, ...] | None = None
        self.server_settings: dict[str, str] = {}
        self.restart_required: list[str] = []
        # What the Ollama we do not start runs with: given (Kubernetes renders it into both containers), or assumed
        self._baseline_env: dict[str, str] | None = settings.ollama_environment
        self._lost_ollama = False
        self._fresh_at: float | None = None  # when self.observed was taken, if nothing changed the node since
        self.queue = WorkQueue()
        self._written: bytes | None = None
        self._written_at = 0.0
        self._publishing = asyncio.Lock()  # the worker's probes and its running pass both publish
        self.status = self._status()

    # -- configuration -----------------------------------------------------------------------
    def _on_snapshot(self, snapshot: Snapshot) -> None:
        self.desired.on_snapshot(snapshot)
        self.queue.add(Work.RECONCILE)

    def _reconcile_soon(self) -> None:
        self.queue.add(Work.RECONCILE)

    def wanted(self) -> Desired:
        return self.desired.for_node(self.settings.labels, self.informer.snapshot.revision, self.placed.models)

    # -- one reconcile step ------------------------------------------------------------------
    async def step(self) -> bool:
        """Apply the latest configuration once; True when the node fully matches it."""
        return await self._step(self.wanted(), time.perf_counter())

    async def _step(self, desired: Desired, started: float) -> bool:
        settled = await self._apply_server_settings(desired.server, desired.server_pools)
        loaded = self.observed.loaded if self.observed is not None else {}
        leaving = [d.config_name for tag, d in desired.unplaced.items() if tag in loaded]
        if leaving:  # the autoscaler took these away: the routers stop sending them here, their requests end, then unload
            await self.placed.drain(leaving)
        # The probe's observation is reused while it is recent and nothing changed the node since,
        # so a configuration change that needs no work on the node costs no call to Ollama.
        recent = self._fresh_at is not None and started - self._fresh_at < self.settings.probe_interval_s * 1.5
        result = await self.reconciler.reconcile(
            desired,
            observed=self.observed if recent else None,
            max_loaded=desired.server.max_loaded_models or self.settings.max_loaded_models,
        )
        self.metrics.pass_seconds.observe(time.perf_counter() - started)
        self.metrics.passes.labels("ok" if result.ok else "failed").inc()
        if result.observed is None or result.mutations or not recent:
            # (a pass that reused a recent observation and changed nothing keeps the newest one)
            self._observed(result.observed)
            self._fresh_at = None if result.observed is None else (self._fresh_at if recent else started)
        if result.ok:
            self.applied_revision = max(self.applied_revision, desired.revision)
        await self.publish()
        return result.ok and settled  # a restart put off is tried again soon (the pass backs off)

    def _observed(self, observed: Observed | None) -> None:
        if observed is None and self.observed is not None:
            self._lost_ollama = True
        elif observed is not None and self._lost_ollama:
            # Ollama was down and answers again: it restarted, so it read the settings it has now.
            self._lost_ollama = False
            if self.process is None:
                self._baseline_env = self.settings.ollama_environment  # None: unknown, taken from the pool again
        self.observed = observed

    async def _apply_server_settings(self, server: ServerSettings, pools: tuple[str, ...]) -> bool:
        """Restart a supervised Ollama whose start-time settings changed; False when the restart is put off."""
        env = server.environment()
        if self.process is None:
            if self._baseline_env is None:
                self._baseline_env = env  # we cannot see Ollama's environment: assume it started with these
            base = self._baseline_env
            self.server_settings = base
            self.restart_required = sorted(
                f"{k}={env.get(k, '(default)')}" for k in set(env) | set(base) if env.get(k) != base.get(k)
            )
            return True
        if self.process.running and env == self.process.environment:
            self.restart_pending, self.restart_waiting = False, []
            return True
        if not self.process.running:  # the first start: nothing to drain
            await self._restart(env)
            return True
        assert self.restarts is not None
        async with self.restarts.turn(pools) as mine:  # one node of a pool at a time
            if not mine:
                return False
            self.restart_pending = True  # the autoscaler places one more replica of what this node holds
            short = await self.restarts.replicas_elsewhere(self._autoscaled_here, wait_s=self.settings.restart_wait_s,
                                                           waiting=self._waiting_for_replicas)  # fmt: skip
            if short:
                return False  # a later pass tries again; meanwhile the turn goes to the pool's next node
            self.draining = True
            await self.publish()
            await self.restarts.drain()
            await self.process.stop()
            await self._restart(env)
        return True

    def _autoscaled_here(self) -> dict[str, tuple[int, bool]]:
        """The autoscaled models placed here: Model name -> (min_replicas, loaded here)."""
        loaded = self.observed.loaded if self.observed is not None else {}
        return {
            d.config_name: (d.min_replicas, d.name in loaded) for d in self.wanted().models.values() if d.min_replicas is not None
        }  # fmt: skip

    async def _waiting_for_replicas(self, short: list[str]) -> None:
        self.restart_waiting = short
        await self.publish()

    async def _restart(self, env: dict[str, str]) -> None:
        assert self.process is not None
        try:
            await self.process.start(env)
        finally:
            self.draining, self.restart_pending, self.restart_waiting = False, False, []
        self.reconciler.forget_loaded()
        self.server_settings = dict(env)
        # what it held went with the old process: a status still listing it would count as ready replicas
        try:
            self._observed(await self.node.observe(version=False))
        except (OllamaUnavailable, OllamaFailed):
            self._observed(None)
        self._fresh_at = None

    # -- health probe ------------------------------------------------------------------------
    async def probe(self) -> None:
        """Check Ollama once and publish the status (the worker's, never during a pass)."""
        started = time.perf_counter()
        try:
            observed: Observed | None = await self.node.observe(version=self.observed is None)
        except (OllamaUnavailable, OllamaFailed) as exc:
            if self.observed is not None:
                self.reconciler.errors.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {exc}")
            observed = None
        was_down = self.observed is None
        self._observed(observed)
        self._fresh_at = started if observed is not None else None
        if observed is not None and was_down:
            self.queue.add(Work.RECONCILE)  # back (perhaps restarted): reconcile now
        await self.publish()

    # -- status ------------------------------------------------------------------------------
    def _status(self) -> NodeStatus:
        obs = self.observed
        loaded = [
            LoadedModel(
                name=m.name,
                size_bytes=m.size,
                size_vram_bytes=m.size_vram,
                expires_at=m.expires_at,
                digest=m.digest,
                context_length=m.context_length or 0,
            )
            for m in (obs.loaded.values() if obs else [])
        ]
        return NodeStatus(
            node=self.settings.node,
            ollama_reachable=obs is not None,
            ollama_version=self.node.version or None,  # the last version Ollama reported
            loaded_models=sorted(loaded, key=lambda m: m.name),
            available_models=sorted(obs.present) if obs else [],
            applied_revision=self.applied_revision,
            conditions=sorted(self.reconciler.conditions.values(), key=lambda c: c.model),
            last_errors=list(self.reconciler.errors),
            draining=self.draining,
            supervised=self.process is not None,
            estimates=self.estimates,
            restart_pending=self.restart_pending,
            restart_waiting=self.restart_waiting,
            server_settings=self.server_settings,
            restart_required=self.restart_required,
            agent_version=AGENT_VERSION,
            load=NodeLoad(
                loaded_models=len(loaded),
                memory_used_bytes=sum(m.size_bytes for m in loaded),
                probe_ms=self.node.probe_ms if obs else None,
                last_load_ms=self.node.last_load_ms,
            ),
        )

    async def publish(self) -> None:
        """Write the status key when its content changed, or with fresh figures (probe timings) once
        per resync interval; store errors are retried on the next call. Serialized: the probe and a
        pass both publish, and an older status must never land after a newer one."""
        async with self._publishing:
            await self._estimate()
            await self._publish()

    async def _estimate(self) -> None:
        """The memory estimates of the models this node may hold that are on its disk (worked out
        again when the configuration, the placement, the disk or the server settings change)."""
        obs = self.observed
        if obs is None:
            return
        env = self.server_settings
        parallel, kv = parallel_slots(env, self.settings.max_parallel), env.get("OLLAMA_KV_CACHE_TYPE", "f16")
        default_ctx = int(env["OLLAMA_CONTEXT_LENGTH"]) if env.get("OLLAMA_CONTEXT_LENGTH", "").isdigit() else DEFAULT_CTX
        basis = (self.informer.snapshot.revision, self.placed.models, tuple(sorted(obs.present.items())), parallel, kv,
                 default_ctx)  # fmt: skip
        if basis == self._estimated:
            return
        desired = self.wanted()
        may = (*desired.models.values(), *desired.unplaced.values())
        ctx = {d.name: int(dict(d.load_options).get("num_ctx", 0)) for d in may}
        out = {}
        for tag_, num_ctx in sorted(ctx.items())[:1000]:
            digest = obs.present.get(tag_)
            if digest:  # on disk, and known since the last probe
                out[tag_] = await self.estimator.of(tag_, digest=digest, disk_bytes=obs.sizes.get(tag_, 0), num_ctx=num_ctx,
                                                    parallel=parallel, kv_cache_type=kv, default_ctx=default_ctx)  # fmt: skip
        self.estimates, self._estimated = out, basis

    async def _publish(self) -> None:
        status = self._status()
        self.status = status
        self.metrics.ollama_up.set(1 if status.ollama_reachable else 0)
        self.metrics.applied.set(status.applied_revision)
        self.metrics.loaded.set(len(status.loaded_models))
        data = status.model_dump(mode="json", exclude_none=True)
        probe_ms = data["load"].pop("probe_ms", None)  # changes on every probe: refreshed on the resync interval only
        body = orjson.dumps(data)
        now = time.monotonic()
        if body == self._written and now - self._written_at < self.settings.resync_interval_s:
            return
        data["load"]["probe_ms"] = probe_ms
        data["updated_at"] = datetime.now(UTC).isoformat()
        await self.keeper.set_key(self.keys.status(self.settings.node), orjson.dumps(data))
        self._written, self._written_at = body, now
        self.metrics.status_writes.inc()

    async def register(self) -> None:
        s = self.settings
        registration = NodeRegistration(
            name=s.node,
            ollama_url=s.ollama_url,
            labels=s.labels,
            capacity=Capacity(
                memory_bytes=s.memory_bytes,
                gpu_memory_bytes=s.gpu_memory_bytes,
                max_loaded_models=s.max_loaded_models,
                max_parallel=s.max_parallel,
            ),
            agent_version=AGENT_VERSION,
        )
        await self.keeper.set_key(self.keys.node(s.node), orjson.dumps(registration.model_dump(mode="json")))

    # -- loops -------------------------------------------------------------------------------
    async def work(self) -> None:
        """The one worker: forever, take the next item. A pass runs as a task the worker waits on
        beside the queue, so a probe meanwhile publishes the pass's progress; work asked for
        during a pass makes one more pass after it. After a pass the next is due after the resync
        interval, or sooner after a failure (0.5 s, doubling up to ``max_backoff_s``); an event
        (configuration, placement, Ollama back) asks for one at once, which no retry policy could
        express, hence no tenacity here."""
        backoff = 0.5
        running: asyncio.Task[bool] | None = None
        again = False
        self.queue.add(Work.RECONCILE)
        self.queue.add_after(Work.PROBE, self.settings.probe_interval_s)
        try:
            while True:
                taking = asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait({taking, *([running] if running else [])}, return_when=asyncio.FIRST_COMPLETED)
                if running is not None and running in done:
                    ok = self._passed(running)
                    wait_s = self.settings.resync_interval_s if ok else backoff
                    backoff = 0.5 if ok else min(backoff * 2, self.settings.max_backoff_s)
                    running = None
                    if again:
                        again = False
                        self.queue.add(Work.RECONCILE)
                    else:
                        self.queue.add_after(Work.RECONCILE, wait_s)
                if taking not in done:
                    taking.cancel()
                    await asyncio.gather(taking, return_exceptions=True)
                    continue
                item = taking.result()
                if item is Work.RECONCILE:
                    if running is not None:
                        again = True
                    else:
                        self.queue.forget(Work.RECONCILE)
                        running = asyncio.create_task(self.step())
                elif item is Work.PROBE:
                    try:
                        await (self.publish() if running is not None else self.probe())
                    except Exception:
                        log.exception("probe failed")
                    self.queue.add_after(Work.PROBE, self.settings.probe_interval_s)
        finally:
            self.queue.close()
            if running is not None:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)

    @staticmethod
    def _passed(task: asyncio.Task[bool]) -> bool:
        """A finished pass's outcome: True when the node matches; failures are logged."""
        try:
            return task.result()
        except (StoreError, OllamaUnavailable, OllamaFailed) as exc:
            log.warning("reconcile pass failed: %s", exc)
        except Exception:
            log.exception("reconcile pass failed unexpectedly")
        return False

    async def _start(self) -> None:
        """Register, waiting for the store as long as it takes (an agent may start before etcd)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StoreError),
            wait=wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.2),
            before_sleep=lambda state: log.warning("cannot register node %s yet: %s", self.settings.node, state.outcome),
        )
        await retrying(self.register)

    async def run(self) -> None:
        """Run until cancelled; on the way out stop a supervised Ollama and revoke the lease."""
        await self._start()
        tasks = [asyncio.create_task(self.informer.run()), asyncio.create_task(self.keeper.run()),
                 asyncio.create_task(self.placed.run())]  # fmt: skip
        try:
            await self.informer.wait_synced()
            try:  # an agent whose etcd user may not read its placement still serves the models every node holds
                await self.placed.placement.wait_synced(timeout_s=10)
            except TimeoutError:
                log.warning("node %s: its placement (%s) is not readable yet; autoscaled models wait for it",
                            self.settings.node, self.keys.placement(self.settings.node))  # fmt: skip
            tasks.append(asyncio.create_task(self.work()))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.process is not None:
                await self.process.stop()
            if self.node.artifacts is not None:
                await self.node.artifacts.close()
            with contextlib.suppress(StoreError):
                await self.keeper.close()
