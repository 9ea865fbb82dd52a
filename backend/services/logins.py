"""Logging in and changing one's password: who may try now, the password check, and what
a success or a failure leaves behind.

Failed logins slow guessing down; they never lock anyone out. A pair (an account and an
address, or an account and one of its known browsers) makes PAIR_FREE failures; after
that each attempt waits 1, 2, 4 … seconds (at most MAX_WAIT) after the pair's last
failure. An account makes ACCOUNT_FREE failures from all addresses together (guessing
spread over many machines) before the same backoff applies to it (at most
ACCOUNT_MAX_WAIT), except on its known browsers. An IPv6 client counts as its /64
network, which one machine may hold. Failures older than FAILURE_WINDOW count no more.

An attempt is judged in three steps, none of which holds a database connection while a
password is hashed: a short transaction reads what the attempt may do; the password is
checked in the hashing threads (never more than MAX_WAITING at a time waiting for them);
a second short transaction writes the outcome. In this process an account's attempts
take these steps one after another, so each sees every failure before it; another
process may check at most one attempt of its own in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.crypto import keys
from backend.models import InstanceSecret, KnownDevice, LoginAttempt, User, WebSession, utcnow
from backend.services.accounts import (
    DEVICE_DAYS,
    PasswordRefused,
    check_new_password,
    digest,
    new_password_hash,
    open_session,
    verify_password,
)
from backend.services.upsert import insert_for

log = logging.getLogger(__name__)

PAIR_FREE = 5
ACCOUNT_FREE = 20
MAX_WAIT = timedelta(minutes=15)
# Guessing spread over many addresses slows the account for browsers it does not know:
# at most this long, so that its owner, on a new browser, is only ever slowed a little.
ACCOUNT_MAX_WAIT = timedelta(minutes=1)
FAILURE_WINDOW = timedelta(hours=24)
# Password checks waiting for the hashing threads, at most; past that a login is asked
# to come back in a few seconds (503) instead of queueing behind a flood.
MAX_WAITING = 32
BUSY_RETRY = 5
# The keys a failure is counted under (LoginAttempt.client): "a:" + a keyed hash of the
# address, or "d:" + the known browser's token digest.
_ADDRESS, _DEVICE = "a:", "d:"
_ADDRESS_KEY_NAME = "login-address-key"


class LoginRefused(Exception):
    """Wrong name or password; or, with retry_after > 0, too soon after failures: then
    the password was not looked at, and the attempt is not counted."""

    def __init__(self, retry_after: int = 0) -> None:
        super().__init__(f"wait {retry_after} s" if retry_after else "wrong name or password")
        self.retry_after = retry_after

    @property
    def throttled(self) -> bool:
        return self.retry_after > 0


class LoginBusy(Exception):
    """Too many password checks are waiting: come back in retry_after seconds."""

    retry_after = BUSY_RETRY


class ClientGone(Exception):
    """The client left before its password was checked: it is not checked."""


@dataclass(frozen=True)
class LoggedIn:
    user: User
    # The new session's cookie token, and a new device token for the browser (None when
    # it is already known to the account).
    session_token: str
    device_token: str | None


@dataclass(frozen=True)
class _Judged:
    """What the first step found: what a failure counts against, how long to wait, and
    the account (None: no such active account)."""

    key: str
    device: str | None
    wait: int
    user_id: int | None
    password_hash: str | None
    demo_account: bool


class _Held:
    """A lock and how many attempts hold or wait for it (dropped at zero)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Logins:
    """Logins of one process (the app has one): the lock per account name, and the
    count of password checks waiting for the hashing threads."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        demo: bool,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._sessions = sessions
        self._demo = demo
        self._max_waiting = max_waiting
        self._held: dict[str, _Held] = {}
        self._waiting = 0

    @asynccontextmanager
    async def _account(self, username: str) -> AsyncIterator[None]:
        """This account's attempts one after another; other names never wait for it."""
        held = self._held.setdefault(username, _Held())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self._held[username]

    async def log_in(
        self,
        username: str,
        password: str,
        *,
        address: str,
        device_tokens: Sequence[str] = (),
        still_wanted: Callable[[], bool] = lambda: True,
        now: datetime | None = None,
    ) -> LoggedIn:
        """A new session for the name and password, or LoginRefused (LoginBusy when the
        hashing threads have too much waiting; ClientGone when the client left first). A
        demo account logs in only while the demo runs."""
        now = now or utcnow()
        username = username[:64]
        async with self._account(username):
            async with self._sessions() as session, session.begin():
                judged = await _judge(session, username, address, device_tokens, now)
            if judged.wait:
                log.info("login attempt refused: %d s to wait after failures", judged.wait)
                raise LoginRefused(retry_after=judged.wait)
            if not still_wanted():
                raise ClientGone()
            ok = await self._check(judged.password_hash, password)
            if judged.demo_account and not self._demo:
                ok = False
            async with self._sessions() as session, session.begin():
                if not ok:
                    await _fail(session, username, judged.key, now)
                    done = None
                else:
                    done = await _succeed(session, username, judged, password, now)
        if done is None:
            raise LoginRefused()
        return done

    async def change_password(
        self,
        username: str,
        current: str,
        new: str,
        again: str,
        *,
        keep_session: str,
        address: str,
        device_tokens: Sequence[str] = (),
        now: datetime | None = None,
    ) -> None:
        """Replace the password of the account signed in on session keep_session (a token
        digest), which knows its current one: its other sessions end (its known browsers
        stay known: they need the new password). A wrong current password counts as a
        failed login (LoginRefused); a refused choice raises PasswordRefused."""
        now = now or utcnow()
        async with self._account(username):
            async with self._sessions() as session, session.begin():
                judged = await _judge(session, username, address, device_tokens, now)
            if judged.wait:
                raise LoginRefused(retry_after=judged.wait)
            if not await self._check(judged.password_hash, current):
                async with self._sessions() as session, session.begin():
                    await _fail(session, username, judged.key, now)
                raise LoginRefused()
            if judged.demo_account:
                raise PasswordRefused("password.demo")
            if new != again:
                raise PasswordRefused("password.mismatch")
            check_new_password(username, new)
            if new == current:
                raise PasswordRefused("password.same")
            new_hash = await self._hashed(new)
            async with self._sessions() as session, session.begin():
                await _clear(session, username, judged, now)
                user = await session.get(User, judged.user_id)
                if user is None:
                    raise LoginRefused()
                user.password_hash = new_hash
                user.must_change_password = False
                ended = cast(
                    CursorResult[Any],
                    await session.execute(
                        delete(WebSession).where(
                            WebSession.user_id == user.id, WebSession.token_hash != keep_session
                        )
                    ),
                )
                log.info(
                    "user %d changed their password; %d other sessions ended",
                    user.id,
                    ended.rowcount,
                )

    # --- the hashing threads --------------------------------------------------------------

    @asynccontextmanager
    async def _queued(self) -> AsyncIterator[None]:
        if self._waiting >= self._max_waiting:
            log.warning("login refused for now: %d password checks waiting", self._waiting)
            raise LoginBusy()
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def _check(self, password_hash: str | None, password: str) -> bool:
        """Whether password matches; for no account, the time a check takes, spent
        asleep (the answer takes as long, and costs no CPU)."""
        if password_hash is None:
            await asyncio.sleep(await _typical_check())
            return False
        async with self._queued():
            started = time.monotonic()
            ok = await verify_password(password_hash, password)
            _note_check(time.monotonic() - started)
            return ok

    async def _hashed(self, password: str) -> str:
        async with self._queued():
            return await new_password_hash(password)


# How long a password check takes here, kept up to date (an exponential average).
_check_seconds: list[float] = []


async def _typical_check() -> float:
    if not _check_seconds:
        started = time.monotonic()
        await new_password_hash(secrets.token_urlsafe(16))
        _check_seconds[:] = [time.monotonic() - started]
    return _check_seconds[0]


def _note_check(seconds: float) -> None:
    _check_seconds[:] = [0.9 * _check_seconds[0] + 0.1 * seconds if _check_seconds else seconds]


# --- the steps -----------------------------------------------------------------------------


async def _judge(
    session: AsyncSession,
    username: str,
    address: str,
    device_tokens: Sequence[str],
    now: datetime,
) -> _Judged:
    user = await session.scalar(select(User).where(User.username == username, User.active))
    device = None
    if user is not None:
        device = await _known_device(session, user.id, device_tokens, now)
    key = _DEVICE + device[:62] if device else await _address_key(session, address)
    wait = _backoff(
        *await _failures(session, username, LoginAttempt.client == key, now),
        PAIR_FREE,
        MAX_WAIT,
        now,
    )
    if device is None:
        # A known browser is its owner's way in while the account is under attack.
        everywhere = LoginAttempt.client.startswith(_ADDRESS)
        account = await _failures(session, username, everywhere, now)
        wait = max(wait, _backoff(*account, ACCOUNT_FREE, ACCOUNT_MAX_WAIT, now))
    return _Judged(
        key=key,
        device=device,
        wait=wait,
        user_id=user.id if user is not None else None,
        password_hash=user.password_hash if user is not None else None,
        demo_account=user is not None and user.demo,
    )


async def _fail(session: AsyncSession, username: str, key: str, now: datetime) -> None:
    """Count a failure; those past the window go (nobody needs them kept)."""
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - FAILURE_WINDOW))
    session.add(LoginAttempt(username=username, client=key, at=now))


async def _clear(session: AsyncSession, username: str, judged: _Judged, now: datetime) -> None:
    """A success: the pair's failures go, and a known browser is used again."""
    await session.execute(
        delete(LoginAttempt).where(
            LoginAttempt.username == username, LoginAttempt.client == judged.key
        )
    )
    if judged.device is not None:
        await session.execute(
            update(KnownDevice)
            .where(KnownDevice.token_hash == judged.device)
            .values(last_used_at=now)
        )


async def _succeed(
    session: AsyncSession, username: str, judged: _Judged, password: str, now: datetime
) -> LoggedIn | None:
    user = await session.get(User, judged.user_id) if judged.user_id is not None else None
    if user is None or not user.active or user.password_hash != judged.password_hash:
        return None  # gone, or its password changed while this attempt was checked
    await _clear(session, username, judged, now)
    token, _ = await open_session(session, user, now=now)
    device_token = await _remember_device(session, user, judged.device, now)
    return LoggedIn(user, token, device_token)


async def _remember_device(
    session: AsyncSession, user: User, known: str | None, now: datetime
) -> str | None:
    """A new device token for the browser (to set in its cookie), or None when it is
    already known to the account. Browsers unused for DEVICE_DAYS are forgotten."""
    await session.execute(
        delete(KnownDevice).where(
            KnownDevice.user_id == user.id,
            KnownDevice.last_used_at <= now - timedelta(days=DEVICE_DAYS),
        )
    )
    if known is not None:
        return None
    token = secrets.token_urlsafe(32)
    session.add(
        KnownDevice(token_hash=digest(token), user_id=user.id, created_at=now, last_used_at=now)
    )
    return token


def counted_address(address: str) -> str:
    """What a client address counts as for a limit: itself, or for IPv6 its /64 network
    (one household's network hands out many addresses). Logins, the web form and
    Open311 all count by it."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def address_lookup(purpose: str, address: str) -> str:
    """A limit's name for a client address as it counts (counted_address): its keyed
    look-up for this purpose, so that the counts never keep an address."""
    return keys().lookup(purpose, counted_address(address))


async def _address_key(session: AsyncSession, address: str) -> str:
    """The key for an address: keyed with a per-installation secret, so that the table
    cannot be turned back into a list of addresses by hashing every IPv4 address."""
    kept = select(InstanceSecret.value).where(InstanceSecret.name == _ADDRESS_KEY_NAME)
    secret = await session.scalar(kept)
    if secret is None:
        # Made by whichever process asks first.
        await session.execute(
            insert_for(session, InstanceSecret)
            .values(name=_ADDRESS_KEY_NAME, value=secrets.token_urlsafe(32))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        secret = await session.scalar(kept)
    if secret is None:
        raise RuntimeError("the login address key was not kept")
    counted = counted_address(address).encode("utf-8", "surrogateescape")
    return _ADDRESS + hmac.new(secret.encode(), counted, hashlib.sha256).hexdigest()[:62]


async def _known_device(
    session: AsyncSession, user_id: int, device_tokens: Sequence[str], now: datetime
) -> str | None:
    """The digest of the first of a browser's device tokens known to this account."""
    if not device_tokens:
        return None
    found: str | None = await session.scalar(
        select(KnownDevice.token_hash)
        .where(
            KnownDevice.token_hash.in_([digest(token) for token in device_tokens]),
            KnownDevice.user_id == user_id,
            KnownDevice.last_used_at > now - timedelta(days=DEVICE_DAYS),
        )
        .limit(1)
    )
    return found


def _backoff(failures: int, last: datetime | None, free: int, cap: timedelta, now: datetime) -> int:
    """Whole seconds still to wait after `failures`, the last at `last`; 0: go ahead."""
    if failures < free or last is None:
        return 0
    delay = min(timedelta(seconds=2 ** min(failures - free, 30)), cap)
    remaining = (last + delay - now).total_seconds()
    return math.ceil(remaining) if remaining > 0 else 0


async def _failures(
    session: AsyncSession, username: str, which: ColumnElement[bool], now: datetime
) -> tuple[int, datetime | None]:
    """How many failures there are, and the last one's time."""
    found = (
        await session.execute(
            select(func.count(), func.max(LoginAttempt.at))
            .where(LoginAttempt.username == username, which)
            .where(LoginAttempt.at > now - FAILURE_WINDOW)
        )
    ).one()
    count: int = found[0]
    last: datetime | None = found[1]
    return count, last
