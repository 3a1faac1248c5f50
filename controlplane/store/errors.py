"""The store's error hierarchy; backends translate client errors into these (``raise X from exc``)."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or did not answer in time; nothing was written."""


class StoreRejected(StoreError):
    """The backend refused the request itself (too many operations, too large); retrying won't help."""


class Conflict(StoreError):
    """A compare-and-set precondition failed: the object changed (or exists / is missing)."""

    def __init__(self, key: str, *, expected: int | None, actual: int | None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"{key}: expected revision {expected}, found {actual if actual is not None else 'no object'}")


class Compacted(StoreError):
    """A watch asked for history the backend no longer keeps."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"revisions before {compact_revision} were compacted")


class LeaseLost(StoreError):
    """A lease expired or was revoked; keys bound to it are gone."""


class LeadershipLost(StoreError):
    """A leader's write was refused by its fencing token (another candidate leads now), or the
    leader could not renew its lease within its deadline and stopped acting; nothing was written."""
