"""Settings of a connection to the configuration store (etcd, ZooKeeper or in memory): one group
every process that talks to the store embeds (``LLMTUNE_STORE__…`` in the control plane)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode


class StoreSettings(BaseModel):
    backend: Literal["etcd", "zookeeper", "memory"] = Field(default="etcd", description="Configuration store backend.")
    endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:2379"],
        description="etcd client URLs, comma-separated in the environment; tried in order.",
    )
    zookeeper_hosts: str = Field(
        default="127.0.0.1:2181", description="ZooKeeper connection string (host:port,host:port) when backend=zookeeper."
    )
    zookeeper_root: str = Field(
        default="/llmtune-store",
        pattern=r"^/[A-Za-z0-9._/-]*$",
        description="znode under which the ZooKeeper backend keeps everything.",
    )
    namespace: str = Field(default="llmtune", pattern=r"^[a-z0-9][a-z0-9-]*$", description="Key-space namespace.")
    username: str | None = Field(default=None, description="etcd user (enables token authentication).")
    password: SecretStr | None = Field(default=None, description="etcd password.")
    ca_file: str | None = Field(default=None, description="CA bundle that signed etcd's server certificate.")
    cert_file: str | None = Field(default=None, description="Client certificate for etcd mutual TLS.")
    key_file: str | None = Field(default=None, description="Key of the client certificate.")
    timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one store request.")
    max_txn_ops: int = Field(default=128, ge=8, description="Operations one transaction may hold; match etcd's --max-txn-ops.")
    progress_interval_s: float = Field(
        default=5.0, gt=0, description="How often each watch asks etcd for a progress notification."
    )
    idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Re-list when a watch stays silent this long; keep it well above progress_interval_s.",
    )
    recovery_check_s: float = Field(
        default=5.0, gt=0, le=3600, description="How often the control plane compares the store's epoch with the audit log."
    )

    @field_validator("endpoints", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
