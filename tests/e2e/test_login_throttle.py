"""Failed logins over real HTTP: they slow down guessing on the account and address pair
that made them (and the account from everywhere, past a higher count), never another
account; the address comes from X-Forwarded-For only through trusted proxies; a known
device keeps its owner in; two server processes on one database share the counts."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.e2e.conftest import running
from tests.e2e.staff_http import Visitor, base_url, staff_account, web_settings

# The rules under test: a pair (account, address) makes 5 failures before each further
# attempt waits 1, 2, 4 … seconds; an account makes 20 from all addresses together.
PAIR_FREE = 5
ACCOUNT_FREE = 20
LAN = "lan's own passphrase"
HOA = "hoa's own passphrase"


async def test_failures_on_one_account_never_stop_another_from_the_same_address(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await staff_account(sessions, "lan", LAN)
    await staff_account(sessions, "hoa", HOA)
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    async with running(settings), Visitor() as guesser:
        for _ in range(PAIR_FREE):
            wrong = await guesser.log_in(base, "lan", "guess")
            assert wrong.status == 401
            assert "Sai tên đăng nhập hoặc mật khẩu" in wrong.text
        assert (await guesser.log_in(base, "lan", "guess")).status == 429
        # Same address, same browser even: Hoa's account knows nothing of Lan's failures.
        hoa = await guesser.log_in(base, "hoa", HOA)
        assert (hoa.status, hoa.location) == (303, "/queue")
        async with Visitor() as colleague:
            again = await colleague.log_in(base, "hoa", HOA)
            assert (again.status, again.location) == (303, "/queue")


async def test_behind_a_trusted_proxy_clients_are_counted_apart(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await staff_account(sessions, "lan", LAN)
    settings = web_settings(database_url, tmp_path, trusted_proxies=[ip_network("127.0.0.2")])
    base = base_url(settings)
    async with running(settings), Visitor("127.0.0.2") as proxy:
        for _ in range(PAIR_FREE):
            assert (
                await proxy.log_in(base, "lan", "guess", forwarded_for="203.0.113.7")
            ).status == 401
        assert (await proxy.log_in(base, "lan", LAN, forwarded_for="203.0.113.7")).status == 429
        # The rightmost address the trusted proxy did not add itself is the client: a
        # client cannot pass for another by writing its address further left.
        spoofed = await proxy.log_in(base, "lan", LAN, forwarded_for="198.51.100.9, 203.0.113.7")
        assert spoofed.status == 429
        # Another client behind the same proxy (and a trusted hop on the way) logs in.
        other = await proxy.log_in(base, "lan", LAN, forwarded_for="198.51.100.9, 127.0.0.2")
        assert (other.status, other.location) == (303, "/queue")


async def test_an_untrusted_peer_cannot_dodge_the_throttle_with_a_forged_header(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await staff_account(sessions, "lan", LAN)
    settings = web_settings(database_url, tmp_path, trusted_proxies=[ip_network("127.0.0.2")])
    base = base_url(settings)
    async with running(settings), Visitor("127.0.0.3") as direct, Visitor("127.0.0.2") as proxy:
        for n in range(PAIR_FREE):
            forged = f"192.0.2.{n + 1}"
            assert (await direct.log_in(base, "lan", "guess", forwarded_for=forged)).status == 401
        # Each guess named a new address; 127.0.0.3 is no proxy, so none was believed.
        throttled = await direct.log_in(base, "lan", LAN, forwarded_for="192.0.2.99")
        assert throttled.status == 429
        # The owner, through the real proxy, is another pair.
        owner = await proxy.log_in(base, "lan", LAN, forwarded_for="198.51.100.20")
        assert (owner.status, owner.location) == (303, "/queue")


async def test_backoff_grows_says_how_long_and_then_the_password_works(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await staff_account(sessions, "lan", LAN)
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    async with running(settings), Visitor() as lan:
        for _ in range(PAIR_FREE):
            assert (await lan.log_in(base, "lan", "guess")).status == 401
        english = await lan.log_in(base, "lan", LAN, lang="en")
        assert (english.status, english.retry_after) == (429, "1")
        assert "Wait 1 second and try again" in english.text
        for wait in (1, 2, 4):
            throttled = await lan.log_in(base, "lan", LAN)
            assert throttled.status == 429
            assert throttled.retry_after == str(wait)
            assert f"{wait} giây" in throttled.text
            # A throttled attempt is not another failure: the wait does not grow.
            assert (await lan.log_in(base, "lan", "guess")).retry_after == str(wait)
            await asyncio.sleep(wait)
            if wait < 4:
                assert (await lan.log_in(base, "lan", "guess")).status == 401
        welcome = await lan.log_in(base, "lan", LAN)
        assert (welcome.status, welcome.location) == (303, "/queue")
        # The success cleared the pair's failures: a slip now is only a slip.
        for _ in range(PAIR_FREE):
            assert (await lan.log_in(base, "lan", "guess")).status == 401


async def test_a_known_device_logs_in_despite_guessing_from_everywhere(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await staff_account(sessions, "lan", LAN)
    settings = web_settings(database_url, tmp_path, trusted_proxies=[ip_network("127.0.0.0/8")])
    base = base_url(settings)
    async with running(settings), Visitor() as lan, Visitor() as guesser, Visitor() as newcomer:
        first = await lan.log_in(base, "lan", LAN, forwarded_for="192.0.2.10")
        assert first.status == 303
        device = [c for c in first.set_cookie if c.startswith("hotline_device=")]
        assert len(device) == 1
        assert "HttpOnly" in device[0] and "SameSite=Strict" in device[0]
        assert "Secure" not in device[0]  # plain HTTP here: a Secure cookie would not return
        # A botnet guesses from as many addresses as it has.
        for n in range(ACCOUNT_FREE):
            guess = await guesser.log_in(base, "lan", "guess", forwarded_for=f"198.51.100.{n}")
            assert guess.status == 401
        # From an address never seen, the account as a whole is now slowed down …
        slowed = await newcomer.log_in(base, "lan", LAN, forwarded_for="192.0.2.77")
        assert (slowed.status, slowed.retry_after) == (429, "1")
        # … but the browser Lan signed in from before is known, and gets in.
        again = await lan.log_in(base, "lan", LAN, forwarded_for="192.0.2.10")
        assert (again.status, again.location) == (303, "/queue")
        # The device cookie counts for Lan's account only.
        assert (await lan.log_in(base, "lan", "guess", forwarded_for="192.0.2.10")).status == 401


async def test_two_server_processes_share_the_counts(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await staff_account(sessions, "lan", LAN)
    one = web_settings(database_url, tmp_path)
    two = web_settings(database_url, tmp_path)
    bases = [base_url(one), base_url(two)]
    async with running(one), running(two), Visitor() as guesser:
        for n in range(PAIR_FREE):
            assert (await guesser.log_in(bases[n % 2], "lan", "guess")).status == 401
        for base in bases:
            throttled = await guesser.log_in(base, "lan", LAN)
            assert (throttled.status, throttled.retry_after) == (429, "1")
        await asyncio.sleep(1)
        assert (await guesser.log_in(bases[1], "lan", LAN)).status == 303
