"""Signed outbound webhooks for partner systems (provincial portals): registration with
its address checks, the events queued in the transaction of the change that causes them,
their body (a ticket's public facts only) and their signature.

Delivery is backend.services.webhook_delivery's work: each queued row is sent at least
once, signed afresh at each attempt over the same body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    AuditEvent,
    Category,
    Province,
    Ticket,
    Ward,
    Webhook,
    WebhookDelivery,
    utcnow,
)
from backend.services.tickets import is_public

CREATED = "ticket.created"
STATUS_CHANGED = "ticket.status_changed"
ANSWERED = "ticket.answered"
OVERDUE = "ticket.overdue"
EVENTS = (CREATED, STATUS_CHANGED, ANSWERED, OVERDUE)
# The test event an admin sends from the admin page: it goes through the same queue.
PING = "ping"

TIMESTAMP_HEADER = "X-Hotline-Timestamp"
SIGNATURE_HEADER = "X-Hotline-Signature"
EVENT_HEADER = "X-Hotline-Event"
DELIVERY_HEADER = "X-Hotline-Delivery"
# A receiver refuses a delivery signed longer ago than this (replay protection).
TOLERANCE_SECONDS = 300

MAX_NAME = 100
MAX_URL = 2000

# The case page of the public side, under the configured public URL (set once per
# process when the app starts: the services that queue events have no settings).
_public_url: str | None = None


def configure(public_url: str | None) -> None:
    """The service's external base URL, for the case page link in every body."""
    global _public_url
    _public_url = public_url.rstrip("/") if public_url else None


def case_url(code: str) -> str | None:
    return f"{_public_url}/r/{code}" if _public_url else None


# --- signature -----------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: str) -> str:
    """The signature header's value: HMAC-SHA256 with the webhook's secret over
    `<timestamp>.<body>`, in hex, under the scheme's version (v1=)."""
    message = f"{timestamp}.{body}".encode()
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, timestamp: int, event: str, event_id: str, body: str
) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        EVENT_HEADER: event,
        DELIVERY_HEADER: event_id,
    }


# --- addresses -----------------------------------------------------------------------------


class WebhookError(ValueError):
    """A registration refused; `code` names why (a catalogue key's last part)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def address_allowed(address: str, allow_private: bool) -> bool:
    """Whether the service may connect to this IP address: a public (global unicast)
    one, or any when private addresses are allowed (a partner on the same network)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return not ip.is_unspecified and not ip.is_multicast
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _EMBEDDING):
        # An IPv4 address carried inside IPv6 (NAT64, 6to4, Teredo, IPv4-compatible) may
        # reach the internal network through a gateway: Python counts most as global.
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _IETF_PROTOCOL:
        return False
    return ip.is_global and not ip.is_multicast


# IPv6 ranges that embed an IPv4 address, refused unless private addresses are allowed.
_EMBEDDING = tuple(
    ipaddress.IPv6Network(net)
    for net in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "::/96", "2001::/32")
)
# IETF protocol assignments (192.0.0.0/24): Python counts 192.0.0.8 and others as global.
_IETF_PROTOCOL = ipaddress.IPv4Network("192.0.0.0/24")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook URL: its scheme, host and port."""

    url: str
    scheme: str
    host: str
    port: int


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> Target:
    """The URL if it may receive deliveries: https (http only when allowed), a host,
    no user name or password in it, no fragment; a literal IP address must be public
    unless private addresses are allowed. Names are checked when resolved (resolve())."""
    url = url.strip()
    if not url or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise WebhookError("bad_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookError("bad_url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise WebhookError("bad_url")
    if scheme == "http" and not allow_http:
        raise WebhookError("not_https")
    host = (parts.hostname or "").rstrip(".")
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise WebhookError("bad_url")
    if port == 0:
        raise WebhookError("bad_url")
    if not host.isascii():
        # A name in Vietnamese (tên miền tiếng Việt) is checked in its ASCII (IDNA) form.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise WebhookError("bad_url") from None
    if not _is_ip(host) and not _hostname(host):
        raise WebhookError("bad_url")
    if _is_ip(host) and not address_allowed(host, allow_private):
        raise WebhookError("private_address")
    local = host.lower() == "localhost" or host.lower().endswith(".localhost")
    if local and not allow_private:
        raise WebhookError("private_address")
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _hostname(host: str) -> bool:
    """A DNS name of letters, digits, hyphens and dots (IDNA names in their xn-- form)."""
    labels = host.split(".")
    return len(host) <= 253 and all(
        0 < len(label) <= 63
        and label.isascii()
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        for label in labels
    )


async def resolve(target: Target, *, allow_private: bool) -> None:
    """Refuse a name that resolves to nothing, or to any address not allowed (a name that
    points inside the network: server-side request forgery)."""
    if _is_ip(target.host):
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), 5
        )
    except (OSError, TimeoutError, UnicodeError):
        raise WebhookError("unresolvable") from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses:
        raise WebhookError("unresolvable")
    if not all(address_allowed(a, allow_private) for a in addresses):
        raise WebhookError("private_address")


# --- registration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    webhook: Webhook
    # Shown once, to the admin who registered it; kept sealed.
    secret: str


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def register(
    session: AsyncSession,
    *,
    name: str,
    url: str,
    province_code: str,
    events: Sequence[str],
    actor: str,
    user_id: int | None,
    allow_http: bool,
    allow_private: bool,
    now: datetime | None = None,
) -> Registered:
    """A webhook for a province's events, with a new secret; audited."""
    now = now or utcnow()
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise WebhookError("bad_name")
    if not events or any(e not in EVENTS for e in events):
        raise WebhookError("bad_events")
    if await session.get(Province, province_code) is None:
        raise WebhookError("bad_province")
    target = check_url(url, allow_http=allow_http, allow_private=allow_private)
    await resolve(target, allow_private=allow_private)
    secret = new_secret()
    webhook = Webhook(
        name=name,
        url=target.url,
        province_code=province_code,
        events=[e for e in EVENTS if e in events],
        secret=secret,
        created_by=user_id,
        created_at=now,
    )
    session.add(webhook)
    await session.flush()
    session.add(
        AuditEvent.of_act(
            actor, "webhook_register", f"#{webhook.id} {name} {province_code} {target.url}", now
        )
    )
    return Registered(webhook, secret)


async def disable(session: AsyncSession, webhook: Webhook, *, actor: str, now: datetime) -> None:
    """Stop queueing events for it; what is queued is left to fail (the worker marks a
    disabled webhook's deliveries failed rather than send them)."""
    if webhook.disabled_at is None:
        webhook.disabled_at = now
        session.add(
            AuditEvent.of_act(actor, "webhook_disable", f"#{webhook.id} {webhook.name}", now)
        )


# --- events --------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


async def public_facts(session: AsyncSession, ticket: Ticket, ward: Ward) -> dict[str, Any]:
    """What anyone may know of a ticket (its public case page says as much): never the
    reporter, the description, the polluter, staff or notes."""
    category = await session.get(Category, ticket.category_code)
    province = await session.get(Province, ward.province_code)
    return {
        "code": ticket.code,
        "status": ticket.state,
        "category": {
            "code": ticket.category_code,
            "name_vi": category.name_vi if category else None,
            "name_en": category.name_en if category else None,
        },
        "ward": {"code": ward.code, "name": ward.name},
        "province": {
            "code": ward.province_code,
            "name": province.name if province else None,
        },
        "created_at": _iso(ticket.created_at),
        "due_at": _iso(ticket.due_at),
        "answered_at": _iso(ticket.answered_at),
        "url": case_url(ticket.code),
    }


async def ticket_event(
    session: AsyncSession,
    ticket: Ticket,
    event: str,
    now: datetime,
    *,
    previous_status: str | None = None,
) -> int:
    """Queue the event for every live webhook of the ticket's province that hears it,
    in the caller's transaction: it goes out if, and only if, the change commits.
    Returns the deliveries queued."""
    return await tickets_event(session, [ticket], event, now, previous_status=previous_status)


async def tickets_event(
    session: AsyncSession,
    tickets: Sequence[Ticket],
    event: str,
    now: datetime,
    *,
    previous_status: str | None = None,
) -> int:
    """ticket_event() for many tickets at once (the deadline worker's batch), with one
    query for the webhooks. A report hidden from the public, or joined with a case
    that is, is told to no one."""
    shown = [t for t in tickets if await is_public(session, t)]
    if not shown:
        return 0
    wards = {t.id: await session.get(Ward, t.ward_code) for t in shown}
    provinces = {w.province_code for w in wards.values() if w is not None}
    # Only the columns needed: the sealed secret is not opened here, so a secret that no
    # longer opens (a data key changed without it) fails its deliveries, not the report.
    hooks = [
        h
        for h in await session.execute(
            select(Webhook.id, Webhook.province_code, Webhook.events)
            .where(Webhook.province_code.in_(provinces), Webhook.disabled_at.is_(None))
            .order_by(Webhook.id)
        )
        if event in (h.events or [])
    ]
    queued = 0
    for ticket in shown:
        ward = wards[ticket.id]
        mine = [h for h in hooks if ward is not None and h.province_code == ward.province_code]
        if ward is None or not mine:
            continue
        event_id = str(uuid.uuid4())
        body: dict[str, Any] = {
            "id": event_id,
            "type": event,
            "occurred_at": _iso(now),
            "ticket": await public_facts(session, ticket, ward),
        }
        if previous_status is not None:
            body["previous_status"] = previous_status
        text = _dump(body)
        session.add_all(
            WebhookDelivery(
                webhook_id=h.id,
                event=event,
                event_id=event_id,
                ticket_id=ticket.id,
                body=text,
                next_attempt_at=now,
                created_at=now,
            )
            for h in mine
        )
        queued += len(mine)
    return queued


async def ticket_changed(
    session: AsyncSession, ticket: Ticket, action: str, before: str, now: datetime
) -> None:
    """The events of a workflow transition: the status change (when the state changed)
    and, for an answer, the answer too."""
    if ticket.state != before:
        await ticket_event(session, ticket, STATUS_CHANGED, now, previous_status=before)
    if action == "answer":
        await ticket_event(session, ticket, ANSWERED, now)


async def ping(session: AsyncSession, webhook: Webhook, *, actor: str, now: datetime) -> str:
    """Queue a test event for one webhook (through the same queue); audited. Returns
    its event id."""
    event_id = str(uuid.uuid4())
    body = {
        "id": event_id,
        "type": PING,
        "occurred_at": _iso(now),
        "webhook": {"id": webhook.id, "name": webhook.name},
    }
    session.add(
        WebhookDelivery(
            webhook_id=webhook.id,
            event=PING,
            event_id=event_id,
            ticket_id=None,
            body=_dump(body),
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.add(AuditEvent.of_act(actor, "webhook_ping", f"#{webhook.id} {webhook.name}", now))
    return event_id
