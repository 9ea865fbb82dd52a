"""The web report form's token: sealed, bound to the browser's cookie, not too new, not
too old; and the per-address limit's name."""

from __future__ import annotations

import time

import pytest

from backend.web.report_form import TOKEN_HOURS, TokenRefused, address_key, new_token, open_token

COOKIE = "a" * 32


def refused(token: str, cookie: str | None = COOKIE, min_seconds: float = 0) -> str:
    with pytest.raises(TokenRefused) as caught:
        open_token(token, cookie, min_seconds)
    return caught.value.why


def test_a_token_opens_for_its_browser_only() -> None:
    token = new_token(COOKIE, [{"sha256": "0" * 64}])
    assert open_token(token, COOKIE, 0)["p"] == [{"sha256": "0" * 64}]
    assert refused(token, "b" * 32) == "forged"
    assert refused(token, None) == "missing"
    assert refused("", COOKIE) == "missing"


def test_an_altered_token_is_forged() -> None:
    token = new_token(COOKIE, [])
    assert refused(token[:-6] + "AAAAAA") == "forged"
    assert refused("nonsense") == "forged"
    assert refused("x." + token.partition(".")[2]) == "forged"


def test_a_token_is_too_new_then_good_then_too_old() -> None:
    now = time.time()
    assert refused(new_token(COOKIE, [], issued=now), min_seconds=3) == "early"
    assert open_token(new_token(COOKIE, [], issued=now - 4), COOKIE, 3)
    old = new_token(COOKIE, [], issued=now - TOKEN_HOURS * 3600 - 5)
    assert refused(old, min_seconds=3) == "expired"


def test_an_ipv6_household_is_one_address_and_the_address_is_not_kept() -> None:
    one = address_key("2001:db8:1:2::1")
    assert one == address_key("2001:db8:1:2:ffff::9")
    assert one != address_key("2001:db8:1:3::1")
    assert "2001" not in one and "203.0.113.5" not in address_key("203.0.113.5")
    assert address_key("203.0.113.5") != address_key("203.0.113.6")
