"""The router's key check: where clients put keys, what each mode lets through, allow-lists, the
grace of a rotated-out secret, expiry; the key schema's bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from router.auth import Authenticator, KeyRing, NotAllowed, Unauthenticated, presented
from schemas.apikey import ApiKey, ApiKeyCreate, ApiKeySpec, StoredSecret, internal_secret, keyed_hash, new_secret

PEPPER = b"unit-test-pepper-0123456789"


def key(name: str, secret: str, *, previous: tuple[str, datetime] | None = None, **spec: object) -> ApiKey:
    return ApiKey(
        name=name, spec=ApiKeySpec.model_validate({"tenant": "team-a", **spec}),
        secret=StoredSecret(hash=keyed_hash(PEPPER, secret), prefix=secret[:13]),
        previous=StoredSecret(hash=keyed_hash(PEPPER, previous[0]), prefix=previous[0][:13], valid_until=previous[1])
        if previous else None,
        created_at=datetime.now(UTC), created_by="test",
    )  # fmt: skip


def test_keys_arrive_in_every_way_clients_send_them() -> None:
    assert presented({"authorization": "Bearer llmk_x"}) == "llmk_x"
    assert presented({"authorization": "bearer  llmk_x "}) == "llmk_x"
    assert presented({"x-api-key": "llmk_y"}) == "llmk_y" and presented({"api-key": "llmk_z"}) == "llmk_z"
    assert presented({"authorization": "Basic abc"}) is None and presented({}) is None


def test_modes_and_what_each_lets_through() -> None:
    secret, _ = new_secret()
    ring = KeyRing({"a": key("a", secret)}, PEPPER)
    required, optional, off = Authenticator("required", ring), Authenticator("optional", ring), Authenticator("off", ring)
    assert required.authenticate({"authorization": f"Bearer {secret}"}).name == "a"  # type: ignore[union-attr]
    with pytest.raises(Unauthenticated, match="required"):
        required.authenticate({})
    with pytest.raises(Unauthenticated, match="not valid"):
        required.authenticate({"authorization": "Bearer sk-openai-style"})
    assert optional.authenticate({}) is None and optional.authenticate({"authorization": "Bearer unused"}) is None
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        optional.authenticate({"x-api-key": "llmk_deadbeef_" + "x" * 43})
    assert off.authenticate({"x-api-key": "anything"}) is None
    with pytest.raises(Unauthenticated):  # a ring without the pepper knows no key
        Authenticator("required", KeyRing({"a": key("a", secret)}, None)).authenticate({"x-api-key": secret})


def test_allow_lists_tenants_rotation_and_expiry() -> None:
    secret, _ = new_secret()
    old, _ = new_secret()
    past, future = datetime.now(UTC) - timedelta(seconds=1), datetime.now(UTC) + timedelta(hours=1)
    ring = KeyRing({
        "a": key("a", secret, models=["chat", "llama*"], routes=["support-*"], act_for=["team-b"], previous=(old, future)),
        "b": key("b", "llmk_bbbbbbbb_" + "b" * 43, previous=("llmk_cccccccc_" + "c" * 43, past)),
        "c": key("c", "llmk_dddddddd_" + "d" * 43, expires_at=past),
    }, PEPPER)  # fmt: skip
    caller = ring.check(secret)
    assert ring.check(old) == caller  # within the rotation's grace
    assert caller.may_use_model("llama3.2") and caller.may_use_model("chat") and not caller.may_use_model("coder")
    assert caller.may_use_route("support-eu") and not caller.may_use_route(None)  # no route: only '*' allows it
    assert caller.tenant_for(None) == "team-a" and caller.tenant_for("team-a") == "team-a"
    assert caller.tenant_for("team-b") == "team-b"
    with pytest.raises(NotAllowed, match="may not act for tenant 'team-c'"):
        caller.tenant_for("team-c")
    with pytest.raises(Unauthenticated, match="grace has ended"):
        ring.check("llmk_cccccccc_" + "c" * 43)
    with pytest.raises(Unauthenticated, match="has expired"):
        ring.check("llmk_dddddddd_" + "d" * 43)
    with pytest.raises(Unauthenticated):
        ring.check("llmk_" + "x" * 300)  # longer than any key: refused before hashing


def test_key_schema_bounds_and_secret_format() -> None:
    secret, prefix = new_secret()
    assert secret.startswith(prefix + "_") and len(prefix) == 13 and len(secret) == 13 + 1 + 43
    assert internal_secret(PEPPER) == internal_secret(PEPPER) != internal_secret(PEPPER + b"x")
    ApiKeyCreate.model_validate({"name": "svc", "tenant": "t", "limits": {"requests_per_minute": 60}})
    for bad in ({"name": "Svc", "tenant": "t"}, {"name": "svc"}, {"name": "svc", "tenant": "t", "routes": []},
                {"name": "svc", "tenant": "t", "priority": "urgent"}, {"name": "svc", "tenant": "t", "limits": {"concurrent": 0}},
                {"name": "svc", "tenant": "t", "models": ["a b"]}, {"name": "svc", "tenant": "t", "surprise": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            ApiKeyCreate.model_validate(bad)
