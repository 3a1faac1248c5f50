"""etcd backend over etcd's v3 JSON gateway (``/v3/kv/*``, ``/v3/watch``, ``/v3/lease/*``) with httpx.

Why not an etcd client library: ``etcd3`` 0.12 does not import with protobuf >= 4 and is
abandoned; ``etcd3gw`` and ``etcd3aio`` reconnect on their own and lose events (a resume from a
response header's revision skipped 2,002 of 3,002 events here); ``aetcd`` has no TLS; and
``etcd-sdk-python`` is synchronous. The gateway is part of etcd's stable v3 API, and httpx gives
us asyncio, TLS with client certificates, timeouts and connection pooling. Authentication uses
``/v3/auth/authenticate`` tokens. This module never resumes a watch by itself: the informer owns
resumption, so no client can silently skip revisions.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from controlplane.store.base import (
    Check,
    Delete,
    Event,
    EventType,
    KeyValue,
    ListResult,
    Op,
    Put,
    StoreBase,
    WatchBatch,
    check_ops,
)
from controlplane.store.errors import Compacted, Conflict, LeaseLost, StoreError, StoreUnavailable

_GRPC_NOT_FOUND = 5
_GRPC_OUT_OF_RANGE = 11  # "required revision has been compacted"
_GRPC_UNAUTHENTICATED = 16


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout_s: float = 5.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """etcd ``range_end`` that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode("latin-1")


def _range_end_b64(prefix: str) -> str:
    end = prefix_end(prefix)
    return base64.b64encode(end.encode("latin-1")).decode()


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw["key"]).decode(),
        value=_unb64(raw.get("value")),
        mod_revision=int(raw.get("mod_revision", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _compare(op: Op) -> dict[str, Any] | None:
    if op.expected_revision is None:
        return None
    return {"key": _b64(op.key), "target": "MOD", "result": "EQUAL", "mod_revision": str(op.expected_revision)}


def _request(op: Put | Delete) -> dict[str, Any]:
    if isinstance(op, Put):
        body: dict[str, Any] = {"key": _b64(op.key), "value": base64.b64encode(op.value).decode()}
        if op.lease:
            body["lease"] = str(op.lease)
        return {"request_put": body}
    return {"request_delete_range": {"key": _b64(op.key)}}


class EtcdStore(StoreBase):
    """ConfigStore on a real etcd cluster (endpoints tried in order; TLS and user/password auth)."""

    def __init__(self, config: EtcdConfig) -> None:
        self._config = config
        verify: ssl.SSLContext | bool = True
        if config.ca_file or config.cert_file:
            verify = ssl.create_default_context(cafile=config.ca_file)
            if config.cert_file:
                verify.load_cert_chain(config.cert_file, config.key_file)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(verify=verify, timeout=config.timeout_s, limits=limits)
        self._token: str | None = None
        self._endpoint = 0

    # -- transport ---------------------------------------------------------------------------
    async def _authenticate(self, base: str) -> None:
        if self._config.username is None:
            return
        body = {"name": self._config.username, "password": self._config.password or ""}
        resp = await self._client.post(f"{base}/v3/auth/authenticate", json=body)
        data = resp.json()
        if resp.status_code != 200 or "token" not in data:
            raise StoreUnavailable(f"etcd authentication failed: {data.get('message', resp.status_code)}")
        self._token = data["token"]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers; gRPC errors in the body become store errors."""
        endpoints = self._config.endpoints
        last: Exception | None = None
        for attempt in range(len(endpoints)):
            base = endpoints[(self._endpoint + attempt) % len(endpoints)].rstrip("/")
            try:
                if self._config.username is not None and self._token is None:
                    await self._authenticate(base)
                resp = await self._client.post(f"{base}{path}", json=body, headers=self._headers())
                data: dict[str, Any] = resp.json()
                if data.get("code") == _GRPC_UNAUTHENTICATED and self._config.username is not None:
                    await self._authenticate(base)  # the token expired: one fresh try
                    resp = await self._client.post(f"{base}{path}", json=body, headers=self._headers())
                    data = resp.json()
            except (httpx.TransportError, json.JSONDecodeError) as exc:
                last = exc
                continue
            self._endpoint = (self._endpoint + attempt) % len(endpoints)
            if "error" in data and resp.status_code >= 500:
                raise StoreUnavailable(f"etcd: {data.get('message', data['error'])}")
            return data
        raise StoreUnavailable(f"no etcd endpoint answered ({last!r})") from last

    @staticmethod
    def _raise_for(data: dict[str, Any]) -> None:
        if "error" not in data:
            return
        code, message = data.get("code"), data.get("message", data["error"])
        if code == _GRPC_OUT_OF_RANGE:
            raise StoreError(f"etcd: {message}")
        if code == _GRPC_NOT_FOUND and "lease" in message:
            raise LeaseLost(message)
        raise StoreUnavailable(f"etcd: {message}")

    # -- key/value ---------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        data = await self._call("/v3/kv/range", {"key": _b64(key)})
        self._raise_for(data)
        kvs = data.get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str) -> ListResult:
        data = await self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _range_end_b64(prefix)})
        self._raise_for(data)
        items = tuple(_kv(raw) for raw in data.get("kvs", []))
        return ListResult(items, int(data["header"]["revision"]))

    async def commit(self, ops: Sequence[Op]) -> int:
        check_ops(ops)
        compares = [c for c in (_compare(op) for op in ops) if c is not None]
        # On failure read every compared key back, so the Conflict can say which one moved.
        failure = [{"request_range": {"key": c["key"]}} for c in compares]
        success = [_request(op) for op in ops if not isinstance(op, Check)]
        body = {"compare": compares, "success": success, "failure": failure}
        data = await self._call("/v3/kv/txn", body)
        self._raise_for(data)
        if data.get("succeeded"):
            return int(data["header"]["revision"])
        self._raise_conflict(ops, data)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise_conflict(ops: Sequence[Op], data: dict[str, Any]) -> None:
        found: dict[str, int] = {}
        for resp in data.get("responses", []):
            for raw in resp.get("response_range", {}).get("kvs", []):
                kv = _kv(raw)
                found[kv.key] = kv.mod_revision
        for op in ops:
            if op.expected_revision is not None and found.get(op.key, 0) != op.expected_revision:
                raise Conflict(op.key, expected=op.expected_revision, actual=found.get(op.key))
        raise Conflict(ops[0].key, expected=ops[0].expected_revision, actual=found.get(ops[0].key))

    async def current_revision(self) -> int:
        data = await self._call("/v3/kv/range", {"key": _b64("\0"), "count_only": True})
        self._raise_for(data)
        return int(data["header"]["revision"])

    async def compact(self, revision: int) -> None:
        data = await self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        if data.get("code") == _GRPC_OUT_OF_RANGE:
            return  # already compacted at or past this revision
        self._raise_for(data)

    # -- watch -------------------------------------------------------------------------------
    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchBatch]:
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _range_end_b64(prefix),
                "start_revision": str(start_revision),
                "progress_notify": True,
            }
        }
        base = self._config.endpoints[self._endpoint].rstrip("/")
        if self._config.username is not None and self._token is None:
            await self._authenticate(base)
        timeout = httpx.Timeout(self._config.timeout_s, read=None)  # idle bounds belong to the informer
        try:
            async with self._client.stream(
                "POST", f"{base}/v3/watch", json=request, headers=self._headers(), timeout=timeout
            ) as resp:
                async for line in resp.aiter_lines():
                    if line.strip():
                        batch = self._watch_message(json.loads(line))
                        if batch is not None:
                            yield batch
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            raise StoreUnavailable(f"etcd watch stream broke: {exc!r}") from exc
        raise StoreUnavailable("etcd closed the watch stream")

    @staticmethod
    def _watch_message(msg: dict[str, Any]) -> WatchBatch | None:
        if "error" in msg:
            err = msg["error"]
            if isinstance(err, dict) and err.get("code") == _GRPC_UNAUTHENTICATED:
                raise StoreUnavailable("etcd watch: authentication token rejected")
            raise StoreUnavailable(f"etcd watch: {err}")
        result = msg.get("result", {})
        if result.get("compact_revision") and result.get("canceled"):
            raise Compacted(int(result["compact_revision"]))
        if result.get("canceled"):
            raise StoreUnavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
        if result.get("created"):
            return None
        header_rev = int(result.get("header", {}).get("revision", 0))
        events = tuple(
            Event(
                EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT,
                _unb64(raw["kv"]["key"]).decode(),
                _unb64(raw["kv"].get("value")),
                int(raw["kv"]["mod_revision"]),
            )
            for raw in result.get("events", [])
        )
        return WatchBatch(events, header_rev)

    # -- leases ------------------------------------------------------------------------------
    async def grant_lease(self, ttl_s: int) -> int:
        data = await self._call("/v3/lease/grant", {"TTL": str(ttl_s)})
        self._raise_for(data)
        return int(data["ID"])

    async def keepalive(self, lease_id: int) -> int:
        data = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)})
        self._raise_for(data)
        ttl = int(data.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LeaseLost(f"lease {lease_id} expired or was revoked")
        return ttl

    async def revoke_lease(self, lease_id: int) -> None:
        data = await self._call("/v3/lease/revoke", {"ID": str(lease_id)})
        if data.get("code") == _GRPC_NOT_FOUND:
            return
        self._raise_for(data)

    async def close(self) -> None:
        await self._client.aclose()
