"""Staff accounts: argon2 passwords (hashed off the event loop), the rules for choosing
one, and server-side sessions. Logging in is backend/services/logins.py."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    KnownDevice,
    Unit,
    User,
    WebSession,
    utcnow,
)

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
TELEGRAM_ID = re.compile(r"-?[0-9]{1,20}")
ROLES = ("operator", "ward_staff", "ward_leader", "supervisor", "police", "admin")
SESSION_DAYS = 7

# A browser that signed in to an account stays known this long after its last login.
DEVICE_DAYS = 180

MIN_PASSWORD = 12
COMMON_PASSWORDS = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"
# Digits, punctuation and spaces around a password's core ("Password2024!" → "password").
_DECORATION = re.compile(r"^[\W\d_]+|[\W\d_]+$")

_hasher = PasswordHasher()


class PasswordRefused(ValueError):
    """A new password that is not accepted; key names the catalogue message saying why."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class NewUser:
    user: User
    one_time_password: str


def digest(value: str) -> str:
    """sha256 hex of a token (cookies keep tokens, the database their digests)."""
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
        # A demo account is a training one: its password is shared and never changed.
        must_change_password=not demo,
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
    await set_password(session, user, password, one_time=not user.demo)
    log.info("password of user %d reset by %s", user.id, by)
    return password


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


# --- sessions ------------------------------------------------------------------------------


async def open_session(
    session: AsyncSession, user: User, *, now: datetime | None = None
) -> tuple[str, WebSession]:
    """A new session for user: the cookie token (returned once) and its row."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_hash=digest(token),
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
    row = await session.get(WebSession, digest(token))
    if row is None or row.expires_at <= now:
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.active or (user.demo and not demo):
        return None
    return user, row


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == digest(token)))
