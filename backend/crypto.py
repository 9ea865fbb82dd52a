"""Encryption at rest of reporters' identities: AES-GCM values and keyed look-ups.

Each sealed value is `<key id>.<base64(nonce | ciphertext | tag)>`, with the column it
belongs to as associated data (a value copied into another column does not open). The
key id says which data key sealed it, so `hotline rotate-data-key` can re-seal values
in batches while the service runs: until it is done, the previous key still opens the
values it sealed.

Look-ups (a chat by channel and chat id, a reporter by phone) go through an HMAC-SHA256
of the value under the look-up key, never the plaintext. The look-up key is derived from
the first data key an installation had, kept in the database sealed under the current
data key, and sealed again at each rotation: it never changes, so neither do the stored
look-ups, and a rotation need not touch them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Text, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.types import TypeDecorator

KEY_BYTES = 32
NONCE_BYTES = 12
# The instance secret that holds the look-up key, sealed.
LOOKUP_SECRET = "lookup_key"  # noqa: S105 - a row's name, not a secret
LOOKUP_PURPOSE = "instance_secrets.lookup_key"


class DataKeyError(ValueError):
    """A data key is missing, malformed, or not the one that sealed a value."""


def new_key() -> str:
    """A fresh data key, as HOTLINE_DATA_KEY takes it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str, name: str = "HOTLINE_DATA_KEY") -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise DataKeyError(
            f"{name} must be {KEY_BYTES} random bytes in base64 (`hotline new-data-key` prints one)"
        )
    return key


def key_id(key: bytes) -> str:
    """A short public name of a key, stored with each value it seals."""
    return hmac.new(key, b"hotline data key id", hashlib.sha256).hexdigest()[:8]


# How many chats' look-ups a process keeps at hand (each is computed once per chat).
CHAT_KEYS_KEPT = 50_000


class Keyring:
    """The current data key, the previous ones (read only), and the look-up key."""

    def __init__(
        self, current: bytes, previous: tuple[bytes, ...] = (), lookup_key: bytes = b""
    ) -> None:
        self.current = current
        self.previous = previous
        self.current_id = key_id(current)
        self._ciphers = {key_id(k): AESGCM(k) for k in (*previous, current)}
        self._cipher = self._ciphers[self.current_id]
        self.lookup_key = lookup_key or derive_lookup_key(current)

    @property
    def lookup_key(self) -> bytes:
        return self._lookup_key

    @lookup_key.setter
    def lookup_key(self, key: bytes) -> None:
        self._lookup_key = key
        # Copied for each look-up: cheaper than keying a new HMAC each time.
        self._lookup_mac = hmac.new(key, digestmod=hashlib.sha256)
        self._chat_keys: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id}, previous={len(self.previous)})"

    def known(self, kid: str) -> bool:
        return kid in self._ciphers

    def seal(self, plain: str, purpose: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher.encrypt(nonce, plain.encode(), purpose.encode())
        return self.current_id + "." + binascii.b2a_base64(nonce + sealed, newline=False).decode()

    def open(self, token: str, purpose: str) -> str:
        kid, _, body = token.partition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DataKeyError(
                f"a value in {purpose} is sealed under key {kid!r}, which is neither "
                "HOTLINE_DATA_KEY nor one of HOTLINE_DATA_KEY_PREVIOUS"
            )
        try:
            raw = binascii.a2b_base64(body)
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
        except (InvalidTag, binascii.Error):
            raise DataKeyError(f"a value in {purpose} does not open: altered, or moved") from None
        return plain.decode()

    def seal_json(self, value: Any, purpose: str) -> str:
        return self.seal(json.dumps(value, ensure_ascii=False, separators=(",", ":")), purpose)

    def open_json(self, token: str, purpose: str) -> Any:
        return json.loads(self.open(token, purpose))

    def lookup(self, purpose: str, value: str) -> str:
        mac = self._lookup_mac.copy()
        mac.update(f"{purpose}\0{value}".encode())
        return mac.hexdigest()[:32]

    def chat_key(self, channel: str, chat_id: str) -> str:
        """The stored name of a chat: the same for the same chat, and says nothing of it."""
        chat = (channel, chat_id)
        found = self._chat_keys.get(chat)
        if found is None:
            if len(self._chat_keys) >= CHAT_KEYS_KEPT:
                self._chat_keys.clear()
            found = self._chat_keys[chat] = self.lookup("chat", f"{channel}:{chat_id}")
        return found

    def phone_key(self, phone: str) -> str:
        return self.lookup("phone", phone)


def derive_lookup_key(data_key: bytes) -> bytes:
    return hmac.new(data_key, b"hotline look-up key v1", hashlib.sha256).digest()


def sealed_id(token: str) -> str:
    """The key id a sealed value names."""
    return token.partition(".")[0]


def agree(conn: Connection, ring: Keyring, *, first_use: bool = False) -> Keyring:
    """Check ring against the database, and take the installation's look-up key from it
    (made on first use). A key that did not seal the database's values is refused here,
    at start, before anything is read or written with it. first_use: the database held
    no sealed value yet (the migration that seals what was in the clear)."""
    select = text("SELECT value FROM instance_secrets WHERE name = :name")
    stored = conn.scalar(select, {"name": LOOKUP_SECRET})
    if stored is None and not first_use and conn.scalar(_ANY_SEALED) is not None:
        # Restored without its instance secrets, say: a new look-up key would find no
        # chat and no reporter again.
        raise DataKeyError(
            "the database holds sealed identities but not its look-up key "
            f"(instance_secrets.{LOOKUP_SECRET}): restore that row from the same backup"
        )
    if stored is None:
        sealed = ring.seal(base64.b64encode(ring.lookup_key).decode(), LOOKUP_PURPOSE)
        conn.execute(
            text(
                "INSERT INTO instance_secrets (name, value, created_at)"
                " VALUES (:name, :value, CURRENT_TIMESTAMP) ON CONFLICT DO NOTHING"
            ),
            {"name": LOOKUP_SECRET, "value": sealed},
        )
        stored = conn.scalar(select, {"name": LOOKUP_SECRET})
    kid = sealed_id(str(stored))
    if not ring.known(kid):
        raise DataKeyError(
            f"HOTLINE_DATA_KEY (key id {ring.current_id}) is not the key this database is "
            f"sealed under (key id {kid}): set the right key; during a rotation, give the "
            "old one in HOTLINE_DATA_KEY_PREVIOUS"
        )
    ring.lookup_key = base64.b64decode(ring.open(str(stored), LOOKUP_PURPOSE))
    return ring


_ANY_SEALED = text(
    "SELECT 1 FROM reporter_identities UNION ALL SELECT 1 FROM conversations LIMIT 1"
)

_installed: Keyring | None = None


def install(keyring: Keyring) -> None:
    """Make keyring the process's keys (at start, once the database agreed with it)."""
    global _installed
    _installed = keyring


def keys() -> Keyring:
    if _installed is None:
        raise DataKeyError("the data key is not loaded: HOTLINE_DATA_KEY is needed")
    return _installed


def keyring_from(current: str, previous: Iterable[str] = ()) -> Keyring:
    return Keyring(
        parse_key(current),
        tuple(parse_key(p, "HOTLINE_DATA_KEY_PREVIOUS") for p in previous if p.strip()),
    )


class _NotComparable(TypeDecorator.Comparator[Any]):
    """A sealed value differs each time it is sealed: comparing one in SQL would never
    match. Look up through the keyed look-up column beside it instead."""

    def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
        values = [o for o in other if not isinstance(o, ColumnClause)]
        if values and op not in (operators.is_, operators.is_not):
            raise TypeError("a sealed column is found by its keyed look-up, not compared")
        return super().operate(op, *other, **kwargs)


class Sealed(TypeDecorator[Any]):
    """A column stored sealed under the installed keyring: text, or with `json` any
    JSON value."""

    impl = Text
    cache_ok = True
    comparator_factory = _NotComparable

    def __init__(self, purpose: str, *, json: bool = False) -> None:
        super().__init__()
        self.purpose = purpose
        self.json = json

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        ring = keys()
        return ring.seal_json(value, self.purpose) if self.json else ring.seal(value, self.purpose)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        ring = keys()
        return ring.open_json(value, self.purpose) if self.json else ring.open(value, self.purpose)


def SealedJSON(purpose: str) -> Sealed:
    """A JSON value stored sealed."""
    return Sealed(purpose, json=True)
