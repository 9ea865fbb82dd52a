"""Staff accounts: argon2 passwords, server-side sessions, throttled logins."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import LoginAttempt, Unit, User, WebSession, utcnow

USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
ROLES = ("operator", "ward_staff", "ward_leader", "supervisor", "police", "admin")
SESSION_DAYS = 7
# At most this many failed logins per account, and per address, in the window.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)

_hasher = PasswordHasher()
# Verified against when the account does not exist, so both cases take as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class LoginRefused(Exception):
    """Wrong name or password, or too many attempts (`throttled`)."""

    def __init__(self, throttled: bool = False) -> None:
        super().__init__("too many attempts" if throttled else "wrong name or password")
        self.throttled = throttled


@dataclass(frozen=True)
class NewUser:
    user: User
    one_time_password: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether password is the one behind the hash (None: no password set)."""
    if password_hash is None:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create_user(
    session: AsyncSession,
    username: str,
    role: str,
    *,
    display_name: str | None = None,
    unit_code: str | None = None,
    telegram_chat_id: str | None = None,
) -> NewUser:
    """A staff account with a random one-time password (shown once, stored hashed)."""
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
    password = secrets.token_urlsafe(12)
    user = User(
        username=username,
        display_name=display_name or username,
        role=role,
        unit_id=unit_id,
        telegram_chat_id=telegram_chat_id,
        password_hash=hash_password(password),
    )
    session.add(user)
    await session.flush()
    return NewUser(user, password)


async def set_password(session: AsyncSession, user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))


async def authenticate(
    session: AsyncSession, username: str, password: str, client: str, *, now: datetime | None = None
) -> User:
    """The user for a name and password, or LoginRefused. Failures are counted per account
    and per client address; past the limit every attempt is refused until the window
    passes, right password or not."""
    now = now or utcnow()
    client_key = _digest(client)
    since = now - FAILURE_WINDOW
    failures = await session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.at > since)
        .where((LoginAttempt.username == username) | (LoginAttempt.client == client_key))
    )
    if (failures or 0) >= MAX_FAILURES:
        raise LoginRefused(throttled=True)
    user = await session.scalar(select(User).where(User.username == username, User.active))
    ok: bool
    try:
        ok = _hasher.verify(
            user.password_hash if user and user.password_hash else _DUMMY_HASH, password
        )
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or user.password_hash is None:
        session.add(LoginAttempt(username=username[:64], client=client_key, at=now))
        raise LoginRefused()
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


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
    session: AsyncSession, token: str, *, now: datetime | None = None
) -> tuple[User, WebSession] | None:
    """The signed-in user behind a cookie token, while the session lasts."""
    now = now or utcnow()
    row = await session.get(WebSession, _digest(token))
    if row is None or row.expires_at <= now:
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    return user, row


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))
