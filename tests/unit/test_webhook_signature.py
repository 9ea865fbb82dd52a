"""The webhook signature as a partner checks it with the README's snippet: a fresh,
untouched delivery verifies; an old one (a replay), another secret or another body does
not; and the README's snippet is the one the tests' partner runs."""

from __future__ import annotations

import time
from pathlib import Path

from backend.services.webhooks import new_secret, sign, signed_headers
from tests.fakes import partner
from tests.fakes.partner import verify

ROOT = Path(__file__).resolve().parents[2]
BODY = '{"id":"e1","type":"ping"}'


def test_fresh_verifies_old_or_altered_does_not() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret, now, "ping", "e1", BODY)
    assert headers["X-Hotline-Signature"] == sign(secret, now, BODY)
    assert headers["X-Hotline-Signature"].startswith("v1=")
    assert verify(secret, headers, BODY.encode())
    assert not verify(new_secret(), headers, BODY.encode())
    assert not verify(secret, headers, BODY.encode() + b" ")
    # Signed six minutes ago: a replay, refused though the signature is right.
    old = signed_headers(secret, now - 360, "ping", "e1", BODY)
    assert not verify(secret, old, BODY.encode())
    # The timestamp is signed too: moved forward, the signature no longer matches.
    moved = {**old, "X-Hotline-Timestamp": str(now)}
    assert not verify(secret, moved, BODY.encode())
    assert not verify(secret, {}, BODY.encode())


def test_the_readme_snippet_is_the_one_tested() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = "def verify(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:\n"
    documented = readme.split(head, 1)[1].split("```", 1)[0].strip()
    source = Path(partner.__file__).read_text(encoding="utf-8")
    tested = source.split('minutes old."""\n', 1)[1].split("\n\n", 1)[0].strip()
    assert documented == tested


def test_the_readme_names_every_status() -> None:
    from backend.services.workflow import STATES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    said = readme.split("`status` is the ticket's step in the procedure:", 1)[1]
    said = said.split(". `url`", 1)[0]
    named = [w.strip(" `\n,") for w in said.replace(" or ", ", ").split(",")]
    assert named == list(STATES)


def test_hostile_headers_are_refused_not_raised() -> None:
    """A receiver running the README's snippet refuses malformed headers instead of
    crashing: a superscript digit ("²" passes str.isdigit, not int), a non-ASCII or
    too long signature (compare_digest on str raises TypeError), a huge timestamp."""
    secret = new_secret()
    now = int(time.time())
    good = signed_headers(secret, now, "ping", "e1", BODY)
    assert verify(secret, good, BODY.encode())
    hostile = [
        {**good, "X-Hotline-Timestamp": "²"},
        {**good, "X-Hotline-Timestamp": str(now) + "²"},
        {**good, "X-Hotline-Timestamp": "١٢٣"},  # Arabic-Indic digits
        {**good, "X-Hotline-Timestamp": "9" * 5000},
        {**good, "X-Hotline-Timestamp": f" {now}"},
        {**good, "X-Hotline-Timestamp": f"{now}\n"},
        {**good, "X-Hotline-Signature": "v1=é" + good["X-Hotline-Signature"][4:]},
        {**good, "X-Hotline-Signature": "v1=\udcff"},
        {**good, "X-Hotline-Signature": "Ω" * 3000},
    ]
    for headers in hostile:
        assert verify(secret, headers, BODY.encode()) is False, headers
