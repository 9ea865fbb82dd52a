"""The client address: the connection's peer, or, through trusted proxies only, the
rightmost X-Forwarded-For entry that is not a trusted proxy."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from backend.config import Settings
from backend.web.app import SETTINGS
from backend.web.auth import client_address

PROXIES = '["10.0.0.0/8", "2001:db8::/32"]'


def request(
    peer: str, *forwarded: str, proxies: str = PROXIES, monkeypatch: pytest.MonkeyPatch
) -> web.Request:
    # The list comes from the environment as operators give it (a JSON list).
    monkeypatch.setenv("HOTLINE_TRUSTED_PROXIES", proxies)
    app = web.Application()
    app[SETTINGS] = Settings(environment="test")
    headers = CIMultiDict([("X-Forwarded-For", value) for value in forwarded])
    return make_mocked_request("POST", "/login", headers=headers, app=app).clone(remote=peer)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # Not a proxy: its header is its own claim.
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        # Left of the client is what the client wrote itself.
        ("10.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1, 10.0.0.2"], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1,10.0.0.2 , 10.0.0.3"], "198.51.100.1"),
        # Several header lines read as one list, in order.
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
        # Proxies all the way: the furthest one.
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
        # Malformed entries end the walk at the last trusted hop.
        ("10.0.0.1", ["198.51.100.1, not-an-address"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1, garbage, 10.0.0.2"], "10.0.0.2"),
        ("10.0.0.1", ["198.51.100.1:5555"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1, "], "10.0.0.1"),
        # IPv6, and IPv4 peers as a dual-stack socket shows them.
        ("2001:db8::1", ["2001:db9::5"], "2001:db9::5"),
        ("::ffff:10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("::ffff:203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
    ],
)
def test_the_client_is_found_through_trusted_proxies_only(
    peer: str, forwarded: list[str], client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client_address(request(peer, *forwarded, monkeypatch=monkeypatch)) == client


def test_without_trusted_proxies_the_header_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = request("10.0.0.1", "198.51.100.1", proxies="[]", monkeypatch=monkeypatch)
    assert client_address(seen) == "10.0.0.1"
