"""Open311 partner keys: issued to another system by an admin, scoped to one province, kept
only as a SHA-256 (the key itself is shown once), checked by hashing, revoked for good."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import AuditEvent, PartnerKey, Province, utcnow

# 32 random bytes: 43 URL-safe characters.
KEY_BYTES = 32
HINT_LENGTH = 6
NAME_LENGTH = 100


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key_id: int
    name: str
    province_code: str
    hint: str
    # Shown once; never stored.
    key: str


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ValueError("a partner key needs the partner's name")
    if len(cleaned) > NAME_LENGTH or any(ord(c) < 32 for c in cleaned):
        raise ValueError(f"the partner's name: at most {NAME_LENGTH} printable characters")
    return cleaned


async def issue_key(
    session: AsyncSession,
    province_code: str,
    name: str,
    *,
    actor: str = "admin",
    created_by: int | None = None,
) -> IssuedKey:
    """A new key for a partner in a province; ValueError for an unknown province or a
    bad name. The caller commits."""
    cleaned = _clean_name(name)
    code = province_code.strip()
    if not (len(code) == 2 and code.isdigit()) or await session.get(Province, code) is None:
        raise ValueError(f"unknown province {province_code!r}")
    key = secrets.token_urlsafe(KEY_BYTES)
    row = PartnerKey(
        name=cleaned,
        province_code=code,
        key_hash=key_hash(key),
        key_hint=key[:HINT_LENGTH],
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    session.add(
        AuditEvent.of_act(actor, "partner_key_issue", f"key {row.id} ({row.key_hint}…) {cleaned}")
    )
    return IssuedKey(row.id, cleaned, code, row.key_hint, key)


async def find_key(session: AsyncSession, key: str | None) -> PartnerKey | None:
    """The live key that `key` is, or None (absent, unknown or revoked). Looked up by its
    hash, so the key itself is never compared or kept; the digests are compared in
    constant time all the same."""
    if not key or len(key) > 256:
        return None
    digest = key_hash(key)
    row = await session.scalar(select(PartnerKey).where(PartnerKey.key_hash == digest))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash.encode(), digest.encode()):
        return None
    return row


async def revoke_key(
    session: AsyncSession, key_id: int, *, actor: str = "admin", now: datetime | None = None
) -> bool:
    """Revoke a key for good; False when there is no such live key. The caller commits."""
    row = await session.get(PartnerKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now or utcnow()
    session.add(
        AuditEvent.of_act(actor, "partner_key_revoke", f"key {row.id} ({row.key_hint}…) {row.name}")
    )
    return True


async def list_keys(session: AsyncSession) -> list[PartnerKey]:
    return list(await session.scalars(select(PartnerKey).order_by(PartnerKey.id)))
