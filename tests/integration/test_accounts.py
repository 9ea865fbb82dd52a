"""Staff accounts on a real database: the login backoff step by step (per account and
address, per account from everywhere, per known device), attempts made at the same
moment, one-time passwords, the rules for a new password, the change that ends other
sessions, and demo accounts."""

from __future__ import annotations

import asyncio
import unicodedata
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.db import create_engine, session_factory
from backend.models import KnownDevice, LoginAttempt, User, WebSession
from backend.services.accounts import (
    PasswordRefused,
    check_new_password,
    create_user,
    open_session,
    reset_password,
    session_user,
    set_password,
)
from backend.services.logins import (
    ACCOUNT_FREE,
    MAX_WAIT,
    PAIR_FREE,
    LoginRefused,
    Logins,
)

T0 = datetime.fromisoformat("2026-11-30T02:00:00+00:00")
RIGHT = "the owner's own pass phrase"

Sessions = async_sessionmaker[AsyncSession]


async def owner(sessions: Sessions, username: str = "lan", *, demo: bool = False) -> int:
    async with sessions() as s, s.begin():
        user = (await create_user(s, username, "ward_staff", unit_code="W14812")).user
        await set_password(s, user, RIGHT)
        user.demo = demo
        return user.id


async def attempt(
    sessions: Sessions,
    password: str,
    at: datetime,
    *,
    address: str = "192.0.2.1",
    devices: tuple[str, ...] = (),
    username: str = "lan",
    demo: bool = False,
    logins: Logins | None = None,
) -> tuple[User | None, int, str | None]:
    """One login as the web handler makes it: (the user or None, seconds to wait, a new
    device token)."""
    logins = logins or _logins(sessions, demo)
    try:
        done = await logins.log_in(
            username, password, address=address, device_tokens=devices, now=at
        )
    except LoginRefused as exc:
        return None, exc.retry_after, None
    return done.user, 0, done.device_token


_processes: WeakKeyDictionary[Sessions, dict[bool, Logins]] = WeakKeyDictionary()


def _logins(sessions: Sessions, demo: bool) -> Logins:
    """This test's process: one Logins per session factory (and demo switch), as the app
    has one."""
    by_switch = _processes.setdefault(sessions, {})
    return by_switch.setdefault(demo, Logins(sessions, demo=demo))


async def failures(sessions: Sessions) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(LoginAttempt)) or 0)


async def test_each_failure_past_five_doubles_the_wait_up_to_fifteen_minutes(
    sessions: Sessions,
) -> None:
    await owner(sessions)
    now = T0
    for _ in range(PAIR_FREE):
        assert (await attempt(sessions, "guess", now))[1] == 0
    for wait in (1, 2, 4, 8, 16):
        assert (await attempt(sessions, RIGHT, now))[1] == wait
        # Still too soon just before the wait is over; not counted, so the wait holds.
        almost = now + timedelta(seconds=wait) - timedelta(milliseconds=10)
        assert (await attempt(sessions, "guess", almost))[1] == 1
        now += timedelta(seconds=wait)
        assert (await attempt(sessions, "guess", now)) == (None, 0, None)
    assert await failures(sessions) == PAIR_FREE + 5
    for _ in range(6):
        now += MAX_WAIT
        assert (await attempt(sessions, "guess", now))[1] == 0
    assert (await attempt(sessions, RIGHT, now))[1] == MAX_WAIT.total_seconds()
    now += MAX_WAIT
    user, wait, _ = await attempt(sessions, RIGHT, now)
    assert user is not None and wait == 0
    # The success cleared the pair's failures.
    assert await failures(sessions) == 0


async def test_failures_are_forgotten_after_a_day(sessions: Sessions) -> None:
    await owner(sessions)
    for _ in range(PAIR_FREE + 3):
        await attempt(sessions, "guess", T0)
    await attempt(sessions, "guess", T0, address="192.0.2.5")
    # A day later the count starts again: the free attempts are free once more.
    later = T0 + timedelta(hours=24, seconds=1)
    for _ in range(PAIR_FREE - 1):
        assert (await attempt(sessions, "guess", later))[1] == 0
    assert (await attempt(sessions, RIGHT, later))[0] is not None
    # Nor are they kept.
    await attempt(sessions, "guess", later, address="192.0.2.2")
    assert await failures(sessions) == 1


async def test_accounts_and_addresses_are_counted_apart(sessions: Sessions) -> None:
    await owner(sessions, "lan")
    await owner(sessions, "hoa")
    for _ in range(PAIR_FREE + 1):
        await attempt(sessions, "guess", T0, username="lan")
    assert (await attempt(sessions, RIGHT, T0, username="lan"))[1] > 0
    # Another account from the same address, and the same account from another.
    assert (await attempt(sessions, RIGHT, T0, username="hoa"))[0] is not None
    assert (await attempt(sessions, RIGHT, T0, address="192.0.2.2"))[0] is not None


async def test_guessing_from_everywhere_slows_the_account_but_not_its_known_device(
    sessions: Sessions,
) -> None:
    await owner(sessions)
    _, _, device = await attempt(sessions, RIGHT, T0, address="192.0.2.1")
    assert device is not None
    for n in range(ACCOUNT_FREE):
        assert (await attempt(sessions, "guess", T0, address=f"198.51.100.{n}"))[1] == 0
    assert (await attempt(sessions, RIGHT, T0, address="203.0.113.1"))[1] == 1
    # The owner's browser, even at an address the guessing used.
    user, wait, again = await attempt(
        sessions, RIGHT, T0, address="198.51.100.1", devices=("forged", device)
    )
    assert user is not None and wait == 0 and again is None  # known: no new token
    # Its own failures are counted for it alone, with the pair's allowance.
    for _ in range(PAIR_FREE):
        assert (await attempt(sessions, "guess", T0, devices=(device,)))[1] == 0
    assert (await attempt(sessions, RIGHT, T0, devices=(device,)))[1] == 1
    # A device token of another account is no device of this one.
    await owner(sessions, "hoa")
    _, _, hoas = await attempt(sessions, RIGHT, T0, username="hoa", address="192.0.2.9")
    assert hoas is not None
    assert (await attempt(sessions, RIGHT, T0, address="192.0.2.9", devices=(hoas,)))[1] == 1


async def test_attempts_at_the_same_moment_are_judged_one_after_another(
    sessions: Sessions,
) -> None:
    await owner(sessions)
    for _ in range(PAIR_FREE - 1):
        await attempt(sessions, "guess", T0)
    # Ten guesses at once (and the owner's right password among them): each is judged
    # after the ones before it are counted, and nothing still in flight counts.
    outcomes = await asyncio.gather(
        *(attempt(sessions, "guess", T0) for _ in range(10)), attempt(sessions, RIGHT, T0)
    )
    waits = sorted(wait for _, wait, _ in outcomes)
    # One more guess had its password looked at (the fifth failure); every other attempt
    # was told to wait the one second that fifth failure costs, and is not counted.
    assert waits == [0] + [1] * 10
    assert await failures(sessions) == PAIR_FREE


async def test_an_in_flight_flood_does_not_slow_the_owner_elsewhere(sessions: Sessions) -> None:
    """Guesses that are refused for being too soon are never counted: however many an
    attacker sends at once, the account is slowed by real failures only."""
    await owner(sessions)
    flood = [attempt(sessions, "guess", T0, address="198.51.100.7") for _ in range(60)]
    await asyncio.gather(*flood)
    assert await failures(sessions) == PAIR_FREE
    user, wait, _ = await attempt(sessions, RIGHT, T0, address="203.0.113.9")
    assert user is not None and wait == 0


async def test_an_ipv6_client_counts_as_its_slash_64(sessions: Sessions) -> None:
    await owner(sessions)
    for n in range(PAIR_FREE):
        await attempt(sessions, "guess", T0, address=f"2001:db8:1:2::{n + 1:x}")
    # Another address of the same /64 is the same client; another /64 is not.
    assert (await attempt(sessions, RIGHT, T0, address="2001:db8:1:2:ffff::1"))[1] == 1
    assert (await attempt(sessions, RIGHT, T0, address="2001:db8:1:3::1"))[0] is not None


async def test_address_keys_are_no_plain_hash_of_the_address(sessions: Sessions) -> None:
    await owner(sessions)
    await attempt(sessions, "guess", T0, address="192.0.2.1")
    async with sessions() as s:
        key = await s.scalar(select(LoginAttempt.client))
    assert key is not None and key.startswith("a:")
    assert "192.0.2.1" not in key


async def test_one_time_passwords_are_flagged(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        created = await create_user(s, "lan", "ward_staff", unit_code="W14812")
        assert created.user.must_change_password
        await set_password(s, created.user, RIGHT)
        assert not created.user.must_change_password
        given = await reset_password(s, created.user, by="user:1")
        assert created.user.must_change_password and len(given) >= 12


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("ngắn quá", "password.too_short"),
        ("12345678901", "password.too_short"),
        ("qwerty123456", "password.common"),
        ("Password2024!", "password.common"),
        ("  iloveyou!!!!!", "password.common"),
        ("MatKhau@123456", "password.common"),
        ("nguyen.thi.lan", "password.username"),
        ("Nguyen.Thi.Lan2024", "password.username"),
        ("my name is nguyen.thi.lan", "password.username"),
        ("            ", "password.simple"),
        ("aaaaaaaaaaaa", "password.simple"),
        ("123456789012", "password.simple"),
        ("097312345678", "password.simple"),
        ("qwertyuiopas", "password.simple"),
        ("passwordpassword", "password.simple"),
        ("hotlinehotline", "password.simple"),
        ("abcabcabcabc!!", "password.simple"),
        ("zyxwvutsrqponm", "password.simple"),
        ("Sông Mã xa rồi Tây Tiến ơi", None),
        ("correct horse battery staple", None),
    ],
)
def test_the_rules_for_a_new_password(password: str, problem: str | None) -> None:
    try:
        check_new_password("nguyen.thi.lan", password)
    except PasswordRefused as exc:
        assert exc.key == problem
    else:
        assert problem is None


async def test_a_change_ends_other_sessions_and_keeps_known_devices(sessions: Sessions) -> None:
    user_id = await owner(sessions)
    _, _, here = await attempt(sessions, RIGHT, T0, address="192.0.2.1")
    _, _, there = await attempt(sessions, RIGHT, T0, address="192.0.2.2")
    assert here is not None and there is not None
    async with sessions() as s, s.begin():
        user = await s.get(User, user_id)
        assert user is not None
        user.must_change_password = True
        current_cookie, current = await open_session(s, user)
        other_cookie, _ = await open_session(s, user)
        keep = current.token_hash

    async def change(current: str, new: str, again: str | None = None) -> str | None:
        try:
            await _logins(sessions, False).change_password(
                "lan",
                current,
                new,
                new if again is None else again,
                keep_session=keep,
                address="192.0.2.1",
                device_tokens=(here,),
                now=T0,
            )
        except PasswordRefused as exc:
            return exc.key
        except LoginRefused:
            return "wrong"
        return None

    assert await change("not it", "a brand new pass phrase") == "wrong"
    assert await change(RIGHT, "a brand new pass phrase", "another") == "password.mismatch"
    assert await change(RIGHT, RIGHT) == "password.same"
    assert await change(RIGHT, "a brand new pass phrase") is None
    async with sessions() as s:
        assert await session_user(s, other_cookie, demo=False) is None
        found = await session_user(s, current_cookie, demo=False)
        assert found is not None and not found[0].must_change_password
        devices = set(await s.scalars(select(KnownDevice.token_hash)))
        assert len(devices) == 2
        assert set(await s.scalars(select(WebSession.token_hash))) == {keep}
    # Both browsers are still known (no new device token): they need the new password.
    assert (await attempt(sessions, "a brand new pass phrase", T0, devices=(here,)))[2] is None
    assert (await attempt(sessions, "a brand new pass phrase", T0, devices=(there,)))[2] is None
    assert (await attempt(sessions, RIGHT, T0, devices=(there,)))[0] is None


async def test_a_password_typed_in_another_unicode_form_still_matches(sessions: Sessions) -> None:
    user_id = await owner(sessions)
    chosen = "Sông Mã xa rồi Tây Tiến ơi"
    async with sessions() as s, s.begin():
        user = await s.get(User, user_id)
        assert user is not None
        await set_password(s, user, unicodedata.normalize("NFD", chosen))
    assert (await attempt(sessions, unicodedata.normalize("NFC", chosen), T0))[0] is not None


async def test_demo_accounts_only_while_the_demo_runs(sessions: Sessions) -> None:
    await owner(sessions, "demo-lan", demo=True)
    assert (await attempt(sessions, RIGHT, T0, username="demo-lan")) == (None, 0, None)
    user, _, _ = await attempt(sessions, RIGHT, T0, username="demo-lan", demo=True)
    assert user is not None
    async with sessions() as s, s.begin():
        cookie, _ = await open_session(s, user, now=T0)
    async with sessions() as s:
        assert await session_user(s, cookie, demo=False, now=T0) is None
        assert await session_user(s, cookie, demo=True, now=T0) is not None


async def test_processes_check_at_most_one_attempt_each_out_of_turn(
    sessions: Sessions, database_url: str
) -> None:
    """Two processes (two engines and two Logins, no lock shared in memory) guessing at
    once: each judges its own attempts one after another, so past the free failures at
    most one more guess per process has its password looked at."""
    await owner(sessions)
    engines = [create_engine(database_url) for _ in range(2)]
    try:
        processes = [Logins(session_factory(e), demo=False) for e in engines]
        outcomes = await asyncio.gather(
            *(attempt(sessions, "guess", T0, logins=processes[n % 2]) for n in range(20))
        )
    finally:
        for engine in engines:
            await engine.dispose()
    counted = await failures(sessions)
    assert PAIR_FREE <= counted <= PAIR_FREE + 1
    waits = sorted(wait for _, wait, _ in outcomes)
    # The others were told the wait of the failures they saw (1 s after the fifth).
    assert waits[:counted] == [0] * counted and set(waits[counted:]) <= {1, 2}


async def test_a_flood_of_checks_is_told_to_come_back(sessions: Sessions) -> None:
    """Past max_waiting password checks waiting for the hashing threads (MAX_WAITING in
    the app; one here), a login is answered at once (503 on the web) instead of
    queueing behind the flood; no one is locked out by it afterwards."""
    async with sessions() as s, s.begin():
        for n in range(40):
            user = (await create_user(s, f"staff{n}", "ward_staff", unit_code="W14812")).user
            user.must_change_password = False
    logins = Logins(sessions, demo=False, max_waiting=1)
    outcomes = await asyncio.gather(
        *(
            logins.log_in(f"staff{n}", "guess", address=f"198.51.100.{n}", now=T0)
            for n in range(40)
        ),
        return_exceptions=True,
    )
    kinds = {type(o).__name__ for o in outcomes}
    assert kinds == {"LoginRefused", "LoginBusy"}
    # A busy answer counts as no failure.
    assert await failures(sessions) == sum(isinstance(o, LoginRefused) for o in outcomes)
