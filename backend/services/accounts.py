"""Staff accounts: argon2 passwords, server-side sessions, known devices, and logins that
slow down (never lock) per account and per account and address."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import unicodedata
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from ipaddress import IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any, cast
from weakref import WeakKeyDictionary

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, CursorResult, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    InstanceSecret,
    KnownDevice,
    LoginAttempt,
    Unit,
    User,
    WebSession,
    utcnow,
)
from backend.services.upsert import insert_for

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
TELEGRAM_ID = re.compile(r"-?[0-9]{1,20}")
ROLES = ("operator", "ward_staff", "ward_leader", "supervisor", "police", "admin")
SESSION_DAYS = 7

# Failed logins slow guessing down; they never lock anyone out. A pair (an account and
# an address, or an account and one of its known devices) makes PAIR_FREE failures;
# after that each attempt waits 1, 2, 4 … seconds (at most MAX_WAIT) after the pair's
# last failure. An account makes ACCOUNT_FREE failures from all addresses together
# (guessing spread over many machines) before the same backoff applies to the account
# (at most ACCOUNT_MAX_WAIT), except on its known devices. An IPv6 client counts as its
# /64 network, which one machine may hold. Failures older than FAILURE_WINDOW are
# forgotten. An account's attempts are judged one at a time (login_lock, and an advisory
# lock on PostgreSQL), so each sees the failures before it and only those.
PAIR_FREE = 5
ACCOUNT_FREE = 20
MAX_WAIT = timedelta(minutes=15)
# Guessing spread over many addresses slows the account for browsers it does not know:
# at most this long, so that its owner, on a new browser, is only ever slowed a little.
ACCOUNT_MAX_WAIT = timedelta(minutes=1)
FAILURE_WINDOW = timedelta(hours=24)
# A browser that signed in to an account stays known this long after its last login.
DEVICE_DAYS = 180
# The keys a failure is counted under (LoginAttempt.client): "a:" + a keyed hash of the
# address, or "d:" + the known device's token hash.
_ADDRESS, _DEVICE = "a:", "d:"
_ADDRESS_KEY_NAME = "login-address-key"

MIN_PASSWORD = 12
COMMON_PASSWORDS = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"
# Digits, punctuation and spaces around a password's core ("Password2024!" → "password").
_DECORATION = re.compile(r"^[\W\d_]+|[\W\d_]+$")

_hasher = PasswordHasher()
# Verified against when the account does not exist, so both cases take as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class LoginRefused(Exception):
    """Wrong name or password; or, with retry_after > 0, too soon after failures: then
    the password was not looked at, and the attempt is not counted."""

    def __init__(self, retry_after: int = 0) -> None:
        super().__init__(f"wait {retry_after} s" if retry_after else "wrong name or password")
        self.retry_after = retry_after

    @property
    def throttled(self) -> bool:
        return self.retry_after > 0


class PasswordRefused(ValueError):
    """A new password that is not accepted; key names the catalogue message saying why."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class NewUser:
    user: User
    one_time_password: str


@dataclass(frozen=True)
class LoginTry:
    """A login under way: whom it is for and what a failure counts against."""

    username: str
    # LoginAttempt.client: the address's key, or the known device's.
    key: str
    # The KnownDevice.token_hash of the browser, when it is known to this account.
    device: str | None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _normal(password: str) -> str:
    """One form per typed text: Vietnamese keyboards send precomposed or combining marks."""
    return unicodedata.normalize("NFC", password)


def hash_password(password: str) -> str:
    return _hasher.hash(_normal(password))


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether password is the one behind the hash (None: no password set)."""
    if password_hash is None:
        return False
    try:
        return _hasher.verify(password_hash, _normal(password))
    except (VerificationError, InvalidHashError):
        return False


# argon2 takes tens of milliseconds of CPU and 64 MiB: a few at a time, off the event loop
# (argon2-cffi releases the GIL), so that logins never stall the rest of the service.
_hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


async def verify_password(password_hash: str | None, password: str) -> bool:
    """password_matches, in the hashing threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_hashing, password_matches, password_hash, password)


async def new_password_hash(password: str) -> str:
    """hash_password, in the hashing threads."""
    return await asyncio.get_running_loop().run_in_executor(_hashing, hash_password, password)


def _one_time_password() -> str:
    return secrets.token_urlsafe(12)


async def create_user(
    session: AsyncSession,
    username: str,
    role: str,
    *,
    display_name: str | None = None,
    unit_code: str | None = None,
    telegram_chat_id: str | None = None,
    demo: bool = False,
) -> NewUser:
    """A staff account with a random one-time password (shown once, stored hashed), to be
    replaced at the first login. demo: made by a demo account, so it is one too."""
    if not USERNAME.fullmatch(username):
        raise ValueError("a username is 2–64 of a-z, 0-9, '.', '_' and '-'")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if display_name is not None and len(display_name) > 200:
        raise ValueError("a name has at most 200 characters")
    if telegram_chat_id is not None and not TELEGRAM_ID.fullmatch(telegram_chat_id):
        raise ValueError("a Telegram id is digits (a group's starts with -)")
    if await session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValueError(f"the username {username} is taken")
    unit_id = None
    if unit_code is not None:
        unit_id = await session.scalar(select(Unit.id).where(Unit.code == unit_code))
        if unit_id is None:
            raise ValueError(f"no unit {unit_code}")
    elif role != "admin":
        raise ValueError("staff belong to a unit: give --unit")
    password = _one_time_password()
    user = User(
        username=username,
        display_name=display_name or username,
        role=role,
        unit_id=unit_id,
        telegram_chat_id=telegram_chat_id,
        password_hash=await new_password_hash(password),
        must_change_password=True,
        demo=demo,
    )
    session.add(user)
    await session.flush()
    return NewUser(user, password)


async def set_password(
    session: AsyncSession, user: User, password: str, *, one_time: bool = False
) -> None:
    """Give user a new password, ending all their sessions and forgetting their known
    devices. one_time: someone else chose it, so the next login must replace it."""
    user.password_hash = await new_password_hash(password)
    user.must_change_password = one_time
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await session.execute(delete(KnownDevice).where(KnownDevice.user_id == user.id))


async def reset_password(session: AsyncSession, user: User, *, by: str) -> str:
    """A new one-time password for user (returned once), given by `by` (an actor label)."""
    password = _one_time_password()
    await set_password(session, user, password, one_time=True)
    log.info("password of user %d reset by %s", user.id, by)
    return password


# --- logging in ----------------------------------------------------------------------------


def login_lock(username: str) -> asyncio.Lock:
    """The lock an account's logins take in this process, around their whole transaction
    (one of a fixed set per event loop: the names people type are not kept)."""
    loop = asyncio.get_running_loop()
    stripes = _locks.get(loop)
    if stripes is None:
        stripes = _locks[loop] = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
    return stripes[zlib.crc32(username.encode("utf-8", "surrogateescape")) % _LOCK_STRIPES]


_LOCK_STRIPES = 64
_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, list[asyncio.Lock]] = WeakKeyDictionary()
# The advisory locks of logins on PostgreSQL: (this namespace, the username's hash).
_ADVISORY_NAMESPACE = 0x484C


async def _lock_account(session: AsyncSession, username: str) -> None:
    """Other processes' logins to the account wait until this transaction ends. (SQLite
    serves one process, where login_lock does it.)"""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:name))"),
            {"namespace": _ADVISORY_NAMESPACE, "name": username},
        )


def _counted_address(address: str) -> str:
    """What an address counts as: itself, or for IPv6 its /64 network."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is None:
        return str(ip_network(f"{parsed}/64", strict=False))
    return str(parsed.ipv4_mapped if isinstance(parsed, IPv6Address) else parsed)


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
    counted = _counted_address(address).encode("utf-8", "surrogateescape")
    digest = hmac.new(secret.encode(), counted, hashlib.sha256).hexdigest()
    return _ADDRESS + digest[:62]


async def _known_device(
    session: AsyncSession,
    user_id: int,
    device_tokens: Sequence[str],
    *,
    now: datetime | None = None,
) -> str | None:
    """The token hash of the first of a browser's device tokens known to this account."""
    if not device_tokens:
        return None
    now = now or utcnow()
    hashes = [_digest(token) for token in device_tokens]
    found: str | None = await session.scalar(
        select(KnownDevice.token_hash)
        .where(KnownDevice.token_hash.in_(hashes), KnownDevice.user_id == user_id)
        .where(KnownDevice.last_used_at > now - timedelta(days=DEVICE_DAYS))
        .limit(1)
    )
    return found


async def begin_login(
    session: AsyncSession,
    username: str,
    *,
    address: str,
    device_tokens: Sequence[str] = (),
    now: datetime | None = None,
) -> LoginTry:
    """Start judging a login: the account is locked for this transaction (the caller
    holds login_lock(username) around it, and commits it whatever finish_login says). A
    browser known to the account named is counted as itself, anything else by its
    address."""
    now = now or utcnow()
    username = username[:64]
    await _lock_account(session, username)
    user_id = await session.scalar(select(User.id).where(User.username == username))
    device = None
    if user_id is not None:
        device = await _known_device(session, user_id, device_tokens, now=now)
    key = _DEVICE + device[:62] if device else await _address_key(session, address)
    return LoginTry(username=username, key=key, device=device)


def _backoff(failures: int, last: datetime | None, free: int, cap: timedelta, now: datetime) -> int:
    """Whole seconds still to wait after `failures`, the last at `last`; 0: go ahead."""
    if failures < free or last is None:
        return 0
    delay = min(timedelta(seconds=2 ** min(failures - free, 30)), cap)
    remaining = (last + delay - now).total_seconds()
    return math.ceil(remaining) if remaining > 0 else 0


async def _failures(
    session: AsyncSession, attempt: LoginTry, which: ColumnElement[bool], now: datetime
) -> tuple[int, datetime | None]:
    """How many failures there are, and the last one's time."""
    found = (
        await session.execute(
            select(func.count(), func.max(LoginAttempt.at))
            .where(LoginAttempt.username == attempt.username, which)
            .where(LoginAttempt.at > now - FAILURE_WINDOW)
        )
    ).one()
    count: int = found[0]
    last: datetime | None = found[1]
    return count, last


async def _wait_before(session: AsyncSession, attempt: LoginTry, now: datetime) -> int:
    """Seconds this attempt must still wait (0: it may go ahead)."""
    pair = await _failures(session, attempt, LoginAttempt.client == attempt.key, now)
    wait = _backoff(*pair, PAIR_FREE, MAX_WAIT, now)
    if attempt.device is None:
        # A known device is its owner's way in while the account is under attack.
        everywhere = LoginAttempt.client.startswith(_ADDRESS)
        account = await _failures(session, attempt, everywhere, now)
        wait = max(wait, _backoff(*account, ACCOUNT_FREE, ACCOUNT_MAX_WAIT, now))
    return wait


async def finish_login(
    session: AsyncSession,
    attempt: LoginTry,
    password: str,
    *,
    demo: bool,
    now: datetime | None = None,
) -> User:
    """The user for the attempt's name and this password, or LoginRefused. Too soon after
    failures, the password is not looked at and nothing is counted; a wrong one is
    counted as a failure (the caller commits it). A demo account is refused like a wrong
    password unless the demo runs. On success the pair's failures are cleared."""
    now = now or utcnow()
    wait = await _wait_before(session, attempt, now)
    if wait:
        log.info("login attempt refused: %d s to wait after failures", wait)
        raise LoginRefused(retry_after=wait)
    user = await session.scalar(select(User).where(User.username == attempt.username, User.active))
    stored = user.password_hash if user is not None else None
    ok = await verify_password(stored or _DUMMY_HASH, password)
    # Failures past the window count no more: nobody needs them kept.
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - FAILURE_WINDOW))
    if user is None or stored is None or not ok or (user.demo and not demo):
        session.add(LoginAttempt(username=attempt.username, client=attempt.key, at=now))
        await session.flush()
        raise LoginRefused()
    await session.execute(
        delete(LoginAttempt).where(
            LoginAttempt.username == attempt.username, LoginAttempt.client == attempt.key
        )
    )
    if attempt.device is not None:
        await session.execute(
            update(KnownDevice)
            .where(KnownDevice.token_hash == attempt.device)
            .values(last_used_at=now)
        )
    if _hasher.check_needs_rehash(stored):
        user.password_hash = await new_password_hash(password)
    return user


async def remember_device(
    session: AsyncSession, user: User, attempt: LoginTry, *, now: datetime | None = None
) -> str | None:
    """After a successful login: a new device token for the browser (to set in its
    cookie), or None when it is already known to the account. Devices of this account
    unused for DEVICE_DAYS are forgotten."""
    now = now or utcnow()
    await session.execute(
        delete(KnownDevice).where(
            KnownDevice.user_id == user.id,
            KnownDevice.last_used_at <= now - timedelta(days=DEVICE_DAYS),
        )
    )
    if attempt.device is not None:
        return None
    token = secrets.token_urlsafe(32)
    session.add(
        KnownDevice(token_hash=_digest(token), user_id=user.id, created_at=now, last_used_at=now)
    )
    return token


# --- choosing a password ------------------------------------------------------------------


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("# "))


def _core(text: str) -> str:
    return _DECORATION.sub("", _normal(text).casefold().strip())


# Runs of keys or digits that make a password look long without being hard to guess.
_RUNS = (
    "01234567890123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnm",
    "1234567890qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "qazwsxedcrfvtgbyhnujmikolp",
)
_RUNS_BOTH_WAYS = _RUNS + tuple(run[::-1] for run in _RUNS)


def _guessable(folded: str) -> bool:
    """Long but easy: few different characters, digits only, a short part repeated, or
    a run along the keyboard or the alphabet."""
    if len(set(folded)) < 5 or folded.isdigit():
        return True
    length = len(folded)
    for size in range(1, length // 2 + 1):
        if length % size == 0 and folded == folded[:size] * (length // size):
            return True
    return any(folded in run for run in _RUNS_BOTH_WAYS)


def check_new_password(username: str, password: str) -> None:
    """PasswordRefused unless password is long enough, not a common password (also with
    digits or symbols around it), does not hold the username, and is not made easy to
    guess by repeats or runs."""
    if len(_normal(password)) < MIN_PASSWORD:
        raise PasswordRefused("password.too_short")
    core, folded = _core(password), _normal(password).casefold()
    name = username.casefold()
    if core == _core(username) or folded == name or (len(name) >= 3 and name in folded):
        raise PasswordRefused("password.username")
    common = common_passwords()
    if folded in common or core in common:
        raise PasswordRefused("password.common")
    if _guessable(folded) or _guessable(core):
        raise PasswordRefused("password.simple")


async def change_password(
    session: AsyncSession,
    attempt: LoginTry,
    current: str,
    new: str,
    again: str,
    *,
    keep_session: str,
    demo: bool,
    now: datetime | None = None,
) -> User:
    """Replace the password of the account signed in on session keep_session (a token
    hash), which knows its current one: it ends the account's other sessions (its known
    browsers stay known: they still need the new password). A wrong current password
    counts as a failed login (LoginRefused); a refused choice raises PasswordRefused."""
    user = await finish_login(session, attempt, current, demo=demo, now=now)
    if user.demo:
        raise PasswordRefused("password.demo")
    if new != again:
        raise PasswordRefused("password.mismatch")
    check_new_password(user.username, new)
    if await verify_password(user.password_hash, new):
        raise PasswordRefused("password.same")
    user.password_hash = await new_password_hash(new)
    user.must_change_password = False
    ended = cast(
        CursorResult[Any],
        await session.execute(
            delete(WebSession).where(
                WebSession.user_id == user.id, WebSession.token_hash != keep_session
            )
        ),
    )
    log.info("user %d changed their password; %d other sessions ended", user.id, ended.rowcount)
    return user


# --- sessions ------------------------------------------------------------------------------


async def open_session(
    session: AsyncSession, user: User, *, now: datetime | None = None
) -> tuple[str, WebSession]:
    """A new session for user: the cookie token (returned once) and its row."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_hash=_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(days=SESSION_DAYS),
    )
    session.add(row)
    await session.flush()
    return token, row


async def session_user(
    session: AsyncSession, token: str, *, demo: bool, now: datetime | None = None
) -> tuple[User, WebSession] | None:
    """The signed-in user behind a cookie token, while the session lasts; a demo
    account's session counts only while the demo runs."""
    now = now or utcnow()
    row = await session.get(WebSession, _digest(token))
    if row is None or row.expires_at <= now:
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.active or (user.demo and not demo):
        return None
    return user, row


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))
