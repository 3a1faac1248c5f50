"""Usage: the routers' outcome records folded into requests and tokens per time bucket and API key,
tenant, route and model (``usage_buckets``), in the monitor's transaction; and the report by one of
those over a time range, summed by the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from controlplane.db.models import UsageBucket
from controlplane.services.errors import BadRequest
from schemas.monitor import OutcomeRecord, UsageGroup, UsageReport, UsageRow

_COLUMN = {"key": UsageBucket.api_key, "tenant": UsageBucket.tenant, "model": UsageBucket.model, "route": UsageBucket.route}
UsageKey = tuple[int, str, str, str, str]


def fold_usage(session: Session, records: Iterable[OutcomeRecord], *, bucket_s: int) -> None:
    """Add the records to their buckets (inside the caller's transaction, which applies each record once)."""
    sums: dict[UsageKey, list[int]] = {}
    for rec in records:
        key = (int(rec.at // bucket_s * bucket_s), rec.api_key or "", rec.tenant or "", rec.route or "", rec.model)
        row = sums.setdefault(key, [0, 0, 0, 0])
        row[0] += 1
        row[1] += rec.prompt_tokens
        row[2] += rec.completion_tokens
        row[3] += int(rec.estimated)
    for (bucket, api_key, tenant, route, model), (requests, prompt, completion, estimated) in sums.items():
        found = session.scalars(select(UsageBucket).where(
            UsageBucket.bucket == bucket, UsageBucket.api_key == api_key, UsageBucket.tenant == tenant,
            UsageBucket.route == route, UsageBucket.model == model)).one_or_none()  # fmt: skip
        if found is None:
            session.add(UsageBucket(bucket=bucket, api_key=api_key, tenant=tenant, route=route, model=model, requests=requests,
                                    prompt_tokens=prompt, completion_tokens=completion, estimated=estimated))  # fmt: skip
            continue
        found.requests += requests
        found.prompt_tokens += prompt
        found.completion_tokens += completion
        found.estimated += estimated


def _row(group: str, requests: int, prompt: int, completion: int, estimated: int, last: float | None) -> UsageRow:
    return UsageRow(group=group, requests=int(requests), prompt_tokens=int(prompt), completion_tokens=int(completion),
                    total_tokens=int(prompt) + int(completion), estimated_requests=int(estimated),
                    last_at=float(last) if last is not None else None)  # fmt: skip


class Usage:
    """Usage reports from the buckets."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _report(self, group_by: UsageGroup, start: float, end: float) -> UsageReport:
        column = _COLUMN[group_by]
        query = (
            select(column, func.sum(UsageBucket.requests), func.sum(UsageBucket.prompt_tokens),
                   func.sum(UsageBucket.completion_tokens), func.sum(UsageBucket.estimated), func.max(UsageBucket.bucket))
            .where(UsageBucket.bucket >= int(start), UsageBucket.bucket < end)
            .group_by(column)
        )  # fmt: skip
        with Session(self._engine) as session:
            rows = [_row(*found) for found in session.execute(query)]
        rows.sort(key=lambda r: (-r.total_tokens, r.group))
        return UsageReport(group_by=group_by, start=start, end=end, rows=rows)

    async def report(
        self, group_by: UsageGroup, *, window_s: float | None = None, start: float | None = None, end: float | None = None
    ) -> UsageReport:
        """Sums over ``[start, end)`` (unix seconds; ``end`` defaults to now), or the last ``window_s``."""
        end = end if end is not None else time.time()
        if start is None:
            start = end - (window_s if window_s is not None else 86_400)
        if start >= end:
            raise BadRequest(f"the range is empty: from {start} is not before to {end}")
        return await asyncio.to_thread(self._report, group_by, start, end)
