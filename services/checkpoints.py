"""Signed checkpoints of the audit chain, kept where the database cannot reach.

``CheckpointService.checkpoint(tenant)`` verifies the tenant's whole chain, checks that it still
reaches the newest earlier checkpoint (a log only grows), and writes a new checkpoint -- the
platform key's signature over {tenant, size, head row hash, time}, a C2SP signed note
(:mod:`domain.checkpoint`) -- to ``checkpoints/{tenant}/`` in the WORM datasets bucket, under an
Object Lock COMPLIANCE retention: neither a database superuser nor the service itself can
delete or rewrite it before the retention ends. The pipeline calls it at the end of every run;
``rai audit checkpoint`` calls it on demand.

``assess(tenant)`` is ``rai db verify-chain``: the chain recomputed row by row, then compared with
its checkpoints from the newest back to the newest one that still holds. An edited row, a suffix
rewritten and recomputed by a superuser, or a cut tail no longer reaches the signed head at the
signed size; the finding names the checkpoint and the position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from adapters.objectstore import Retention, StoredObject
from db.integrity import ChainVerdict, verify_chain
from db.repository import Database
from domain.checkpoint import (
    ChainState,
    Checkpoint,
    CheckpointError,
    CheckpointFinding,
    judge,
    parse_checkpoint,
    sign_checkpoint,
    size_in_key,
    tenant_prefix,
)
from domain.signing import Signer
from domain.trust import TrustedKeys
from services.errors import GovernanceRefusal, NotFoundError

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; charset=utf-8"


class CheckpointStorePort(Protocol):
    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = ...,
        metadata: Mapping[str, str] | None = None,
        retention: Retention | None = None,
    ) -> StoredObject: ...

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes: ...

    async def list_keys(self, bucket: str, prefix: str) -> list[str]: ...


class ChainBrokenError(GovernanceRefusal):
    """The chain does not verify, or no longer reaches its newest checkpoint: signing a new
    checkpoint over it would launder the tampering."""


@dataclass(frozen=True)
class StoredCheckpoint:
    key: str
    checkpoint: Checkpoint
    signed_by: str
    #: The signed note as stored.
    note: bytes
    #: False when the newest checkpoint already covered exactly this head (nothing was written).
    written: bool = False


@dataclass(frozen=True)
class ChainAssessment:
    verdict: ChainVerdict
    #: Checkpoint objects found for the tenant.
    checkpoints: int
    #: Newest first, down to the newest checkpoint that holds (or all of them).
    findings: tuple[CheckpointFinding, ...]

    @property
    def newest_holding(self) -> CheckpointFinding | None:
        return next((f for f in self.findings if f.holds), None)

    @property
    def ok(self) -> bool:
        """The chain verifies, every checkpoint examined is validly signed and the newest one
        holds. A chain with no checkpoint yet is ok; ``uncovered_rows`` tells how far."""
        if not self.verdict.ok or self.verdict.rows == 0:
            return False
        return all(f.holds for f in self.findings)

    @property
    def uncovered_rows(self) -> int:
        """Rows after the newest checkpoint that holds: not yet protected against a rewrite."""
        holding = self.newest_holding
        covered = holding.checkpoint.size if holding and holding.checkpoint else 0
        return max(self.verdict.head_seq - covered, 0)


def _now() -> datetime:
    return datetime.now(UTC)


class CheckpointService:
    def __init__(
        self,
        db: Database,
        store: CheckpointStorePort,
        trusted: TrustedKeys,
        *,
        bucket: str,
        retention_days: int,
        platform: Signer | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """``platform`` signs new checkpoints (not needed to assess); ``trusted`` verifies the
        stored ones; ``bucket`` is the WORM datasets bucket."""
        self._db = db
        self._store = store
        self._trusted = trusted
        self._bucket = bucket
        self._retention = timedelta(days=retention_days)
        self._platform = platform
        self._clock = clock

    async def checkpoint(self, tenant_id: UUID) -> StoredCheckpoint:
        """Verify the tenant's chain and sign its head into the WORM bucket. ChainBrokenError
        (a governance refusal: do not retry) when the chain is broken or does not reach the
        newest valid checkpoint; NotFoundError when the tenant has no chain."""
        if self._platform is None:
            raise ValueError("this CheckpointService has no platform key to sign with")
        keys = await self._keys(tenant_id)
        verdict = await verify_chain(self._db, tenant_id, keep_hashes_at=_sizes(keys))
        if verdict.rows == 0:
            raise NotFoundError(f"tenant {tenant_id} has no audit chain")
        if not verdict.ok:
            raise ChainBrokenError(
                f"the audit chain of tenant {tenant_id} is broken, no checkpoint written: "
                + "; ".join(verdict.problems)
            )
        newest = await self._newest_valid(keys)
        if newest is not None:
            finding = judge(newest.key, newest.checkpoint, _state(verdict))
            if not finding.holds:
                raise ChainBrokenError(
                    f"the audit chain of tenant {tenant_id} no longer reaches its newest"
                    f" checkpoint, no checkpoint written: {finding.detail}"
                )
            if newest.checkpoint.size == verdict.head_seq:
                return newest
        moment = self._clock()
        checkpoint = Checkpoint(tenant_id, verdict.head_seq, verdict.head_hash, moment)
        note = sign_checkpoint(self._platform, checkpoint)
        stored = await self._store.put_bytes(
            self._bucket,
            checkpoint.object_key(),
            note,
            content_type=CONTENT_TYPE,
            retention=Retention("COMPLIANCE", moment + self._retention),
        )
        logger.info("audit chain of tenant %s checkpointed at seq %d", tenant_id, checkpoint.size)
        return StoredCheckpoint(stored.key, checkpoint, self._platform.key_id, note, written=True)

    async def assess(self, tenant_id: UUID) -> ChainAssessment:
        """The chain recomputed, then held against its checkpoints, newest first."""
        # Listed before the chain is read: a checkpoint written meanwhile is simply not seen,
        # and every listed one covers rows that exist by the time the chain is read.
        keys = await self._keys(tenant_id)
        verdict = await verify_chain(self._db, tenant_id, keep_hashes_at=_sizes(keys))
        state = _state(verdict)
        findings = []
        for key in reversed(keys):
            try:
                checkpoint, _ = parse_checkpoint(
                    await self._store.get_bytes(self._bucket, key), self._trusted
                )
            except CheckpointError as exc:
                findings.append(CheckpointFinding(key, None, False, f"{key}: {exc}"))
                continue
            if checkpoint.tenant_id != tenant_id or checkpoint.object_key() != key:
                findings.append(
                    CheckpointFinding(
                        key, None, False, f"{key}: a valid checkpoint of another chain or place"
                    )
                )
                continue
            finding = judge(key, checkpoint, state)
            findings.append(finding)
            if finding.holds:
                break
        return ChainAssessment(verdict, len(keys), tuple(findings))

    async def newest(self, tenant_id: UUID) -> StoredCheckpoint | None:
        """The newest validly signed checkpoint of the tenant, if any."""
        return await self._newest_valid(await self._keys(tenant_id))

    async def covering(self, tenant_id: UUID, seq: int) -> StoredCheckpoint | None:
        """The smallest validly signed checkpoint that covers row ``seq``."""
        for key in await self._keys(tenant_id):
            size = size_in_key(key)
            if size is None or size < seq:
                continue
            found = await self._read(key)
            if found is not None:
                return found
        return None

    async def _keys(self, tenant_id: UUID) -> list[str]:
        keys = await self._store.list_keys(self._bucket, tenant_prefix(tenant_id))
        # Sorted by size, then time (the key spells both with fixed widths).
        return sorted(k for k in keys if size_in_key(k) is not None)

    async def _newest_valid(self, keys: list[str]) -> StoredCheckpoint | None:
        for key in reversed(keys):
            found = await self._read(key)
            if found is not None:
                return found
        return None

    async def _read(self, key: str) -> StoredCheckpoint | None:
        note = await self._store.get_bytes(self._bucket, key)
        try:
            checkpoint, signer_id = parse_checkpoint(note, self._trusted)
        except CheckpointError as exc:
            # Only the verifier (assess) reports it; a writer must not be stopped by whoever
            # can put objects into the bucket.
            logger.warning("ignoring %s: %s", key, exc)
            return None
        if checkpoint.object_key() != key:
            logger.warning("ignoring %s: it holds the checkpoint of %s", key, checkpoint.origin)
            return None
        return StoredCheckpoint(key, checkpoint, signer_id, note)


def _sizes(keys: list[str]) -> set[int]:
    return {size for key in keys if (size := size_in_key(key)) is not None}


def _state(verdict: ChainVerdict) -> ChainState:
    return ChainState(verdict.head_seq, verdict.first_broken_seq, verdict.hash_at)
