"""Staff accounts: argon2 passwords, server-side sessions, known devices, and logins that
slow down (never lock) per account and per account and address."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, CursorResult, delete, func, select, update
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
ROLES = ("operator", "ward_staff", "ward_leader", "supervisor", "police", "admin")
SESSION_DAYS = 7

# Failed logins slow guessing down; they never lock anyone out. A pair (an account and
# an address, or an account and one of its known devices) makes PAIR_FREE failures;
# after that each attempt waits 1, 2, 4 … seconds (at most MAX_WAIT) after the pair's
# last failure. An account makes ACCOUNT_FREE failures from all addresses together
# (guessing spread over many machines) before the same backoff applies to the account,
# except on its known devices. Failures older than FAILURE_WINDOW are forgotten.
PAIR_FREE = 5
ACCOUNT_FREE = 20
MAX_WAIT = timedelta(minutes=15)
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
    """A login under way. Its row is stored (and committed) as a failure before the
    password is checked, so that attempts made at the same moment, in any process, count
    each other; a success removes it again."""

    row_id: int
    username: str
    # What the failure counts against (LoginAttempt.client).
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
) -> NewUser:
    """A staff account with a random one-time password (shown once, stored hashed), to be
    replaced at the first login."""
    if not USERNAME.fullmatch(username):
        raise ValueError("a username is 2–64 of a-z, 0-9, '.', '_' and '-'")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
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
        password_hash=hash_password(password),
        must_change_password=True,
    )
    session.add(user)
    await session.flush()
    return NewUser(user, password)


async def set_password(
    session: AsyncSession, user: User, password: str, *, one_time: bool = False
) -> None:
    """Give user a new password, ending all their sessions and forgetting their known
    devices. one_time: someone else chose it, so the next login must replace it."""
    user.password_hash = hash_password(password)
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
    digest = hmac.new(secret.encode(), address.encode(), hashlib.sha256).hexdigest()
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
    """Record a login attempt before its password is checked (see LoginTry); commit
    before finish_login. A browser known to the account named is counted as itself,
    anything else by its address."""
    now = now or utcnow()
    # Failures past the window count no more: nobody needs them kept.
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - FAILURE_WINDOW))
    username = username[:64]
    user_id = await session.scalar(select(User.id).where(User.username == username))
    device = None
    if user_id is not None:
        device = await _known_device(session, user_id, device_tokens, now=now)
    key = _DEVICE + device[:62] if device else await _address_key(session, address)
    row = LoginAttempt(username=username, client=key, at=now)
    session.add(row)
    await session.flush()
    return LoginTry(row_id=row.id, username=username, key=key, device=device)


def _backoff(failures: int, last: datetime | None, free: int, now: datetime) -> int:
    """Whole seconds still to wait after `failures`, the last at `last`; 0: go ahead."""
    if failures < free or last is None:
        return 0
    delay = min(timedelta(seconds=2 ** min(failures - free, 30)), MAX_WAIT)
    remaining = (last + delay - now).total_seconds()
    return math.ceil(remaining) if remaining > 0 else 0


async def _failures(
    session: AsyncSession, attempt: LoginTry, which: ColumnElement[bool], now: datetime
) -> tuple[int, datetime | None]:
    """How many failures (other than this attempt) there are, and the last one's time."""
    found = (
        await session.execute(
            select(func.count(), func.max(LoginAttempt.at))
            .where(LoginAttempt.username == attempt.username, which)
            .where(LoginAttempt.at > now - FAILURE_WINDOW, LoginAttempt.id != attempt.row_id)
        )
    ).one()
    count: int = found[0]
    last: datetime | None = found[1]
    return count, last


async def _wait_before(session: AsyncSession, attempt: LoginTry, now: datetime) -> int:
    """Seconds this attempt must still wait (0: it may go ahead)."""
    wait = _backoff(
        *await _failures(session, attempt, LoginAttempt.client == attempt.key, now),
        PAIR_FREE,
        now,
    )
    if attempt.device is None:
        # A known device is its owner's way in while the account is under attack.
        everywhere = LoginAttempt.client.startswith(_ADDRESS)
        account = _backoff(*await _failures(session, attempt, everywhere, now), ACCOUNT_FREE, now)
        wait = max(wait, account)
    return wait


async def finish_login(
    session: AsyncSession,
    attempt: LoginTry,
    password: str,
    *,
    demo: bool,
    now: datetime | None = None,
) -> User:
    """The user for the attempt's name and this password, or LoginRefused. A demo account
    is refused like a wrong password unless the demo runs. On success the pair's
    failures are cleared; on failure the attempt's row stays as one."""
    now = now or utcnow()
    wait = await _wait_before(session, attempt, now)
    if wait:
        await session.execute(delete(LoginAttempt).where(LoginAttempt.id == attempt.row_id))
        log.info("login attempt refused: %d s to wait after failures", wait)
        raise LoginRefused(retry_after=wait)
    user = await session.scalar(select(User).where(User.username == attempt.username, User.active))
    stored = user.password_hash if user is not None else None
    ok = password_matches(stored or _DUMMY_HASH, password)
    if user is None or stored is None or not ok or (user.demo and not demo):
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
        user.password_hash = hash_password(password)
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


def check_new_password(username: str, password: str) -> None:
    """PasswordRefused unless password is long enough, not a common password (also with
    digits or symbols around it), and not the username."""
    if len(_normal(password)) < MIN_PASSWORD:
        raise PasswordRefused("password.too_short")
    core, folded = _core(password), _normal(password).casefold()
    if core == _core(username) or folded == username.casefold():
        raise PasswordRefused("password.username")
    common = common_passwords()
    if folded in common or core in common:
        raise PasswordRefused("password.common")


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
    hash), which knows its current one: it ends the account's other sessions and
    forgets its known devices but the attempt's. A wrong current password counts as a
    failed login (LoginRefused); a refused choice raises PasswordRefused."""
    user = await finish_login(session, attempt, current, demo=demo, now=now)
    if user.demo:
        raise PasswordRefused("password.demo")
    if new != again:
        raise PasswordRefused("password.mismatch")
    check_new_password(user.username, new)
    if password_matches(user.password_hash, new):
        raise PasswordRefused("password.same")
    user.password_hash = hash_password(new)
    user.must_change_password = False
    ended = cast(
        CursorResult[Any],
        await session.execute(
            delete(WebSession).where(
                WebSession.user_id == user.id, WebSession.token_hash != keep_session
            )
        ),
    )
    forget: list[ColumnElement[bool]] = [KnownDevice.user_id == user.id]
    if attempt.device is not None:
        forget.append(KnownDevice.token_hash != attempt.device)
    await session.execute(delete(KnownDevice).where(*forget))
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
