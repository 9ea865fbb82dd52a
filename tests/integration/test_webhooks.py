"""Partners' webhooks on a real database, delivered over real HTTP to a partner on
127.0.0.1: what each change queues (in its own transaction), the body (public facts
only), the signature, retries and backoff under a controlled clock, the day's window,
refusals, addresses the service must not reach, and two processes sharing the work."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import pytest
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Reporter, Ticket, WebhookDelivery, utcnow
from backend.services import webhooks
from backend.services.deadlines import Policies
from backend.services.escalation import escalate_overdue
from backend.services.intake import ReportDraft, submit_report
from backend.services.presence import Presence
from backend.services.reporters import find_or_create_reporter
from backend.services.webhook_delivery import AddressRefused, GuardedResolver, WebhookWorker
from backend.services.workflow import Action, Actor, apply
from tests.factories import PHOTO, actor, make_ticket
from tests.fakes.partner import Answer, Partner, verify

POLICIES = Policies.load()
PUBLIC = "https://hotline.example.vn"
PHONE = "0912345678"
CHAT = "987654321"
DESCRIPTION = "Xưởng nhuộm xả nước đen ra kênh lúc nửa đêm"
POLLUTER = "Công ty TNHH Nhuộm Ánh Dương"


class Clock:
    """The worker's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def public_url() -> Iterator[None]:
    webhooks.configure(PUBLIC)
    yield
    webhooks.configure(None)


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    fake = Partner()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allow_private": True,
            "webhook_timeout": 1.0,
            "webhook_poll_interval": 0.05,
        }
    )


async def add_webhook(
    sessions: async_sessionmaker[AsyncSession],
    url: str,
    *,
    province: str = "38",
    events: tuple[str, ...] = webhooks.EVENTS,
) -> webhooks.Registered:
    async with sessions() as s, s.begin():
        return await webhooks.register(
            s,
            name="Cổng PAHT Thanh Hóa",
            url=url,
            province_code=province,
            events=events,
            actor="admin",
            user_id=None,
            allow_http=True,
            allow_private=True,
        )


def worker_for(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock | None = None,
    presence: Presence | None = None,
) -> WebhookWorker:
    return WebhookWorker(
        sessions,
        presence or Presence(sessions, alone=True),
        settings,
        clock=clock or utcnow,
        jitter=lambda: 1.0,
    )


async def deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[WebhookDelivery]:
    async with sessions() as s:
        return list(await s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


async def report_with_phone(session: AsyncSession) -> Ticket:
    """A report by a Telegram chat with a phone, a description and a polluter named."""
    reporter_id, _ = await find_or_create_reporter(session, "telegram", CHAT)
    submitted = await submit_report(
        session,
        ReportDraft(
            category_code="wastewater",
            ward_code="14812",
            lat=20.074,
            lon=105.912,
            location_source="gps",
            description=DESCRIPTION,
            nature="recurring",
            polluter=POLLUTER,
            phone=PHONE,
            photos=[PHOTO],
        ),
        reporter_id=reporter_id,
        channel="telegram",
        now=utcnow(),
        policies=POLICIES,
    )
    ticket = await session.get(Ticket, submitted.ticket_id)
    assert ticket is not None
    return ticket


async def test_a_delivery_is_signed_fresh_and_carries_public_facts_only(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    registered = await add_webhook(sessions, partner.hook_url)
    async with sessions() as s, s.begin():
        ticket = await report_with_phone(s)
        code = ticket.code
        reporter = await s.get(Reporter, ticket.reporter_id)
        assert reporter is not None
        pseudonym = reporter.pseudonym
    worker = worker_for(sessions, hook_settings)
    assert await worker.pump() == 1
    await worker.stop()
    [got] = partner.hooks()
    assert verify(registered.secret, got.headers, got.raw)
    assert not verify(webhooks.new_secret(), got.headers, got.raw)
    # Tampered with, it no longer verifies.
    assert not verify(registered.secret, got.headers, got.raw.replace(b"38", b"39"))
    assert abs(int(got.headers["X-Hotline-Timestamp"]) - time.time()) < 10
    assert got.headers["X-Hotline-Event"] == "ticket.created"
    body = got.body
    assert got.headers["X-Hotline-Delivery"] == body["id"]
    assert body["type"] == "ticket.created"
    facts = body["ticket"]
    assert facts["code"] == code
    assert facts["status"] == "received"
    assert facts["category"]["code"] == "wastewater"
    assert facts["ward"] == {"code": "14812", "name": "Phường Bỉm Sơn"}
    assert facts["province"] == {"code": "38", "name": "Tỉnh Thanh Hóa"}
    assert facts["url"] == f"{PUBLIC}/r/{code}"
    assert facts["due_at"] and facts["answered_at"] is None
    raw = got.raw.decode()
    for personal in (PHONE, PHONE[1:], CHAT, pseudonym, DESCRIPTION, POLLUTER, "Nhuộm"):
        assert personal not in raw, personal
    assert set(body) == {"id", "type", "occurred_at", "ticket"}
    assert set(facts) == {
        "code",
        "status",
        "category",
        "ward",
        "province",
        "created_at",
        "due_at",
        "answered_at",
        "url",
    }
    [row] = await deliveries(sessions)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 1, 200)
    # The body is kept as it was sent, byte for byte.
    assert row.body == raw


async def test_each_change_queues_its_events_with_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    everything = await add_webhook(sessions, "https://93.184.216.34/all")
    answers = await add_webhook(
        sessions, "https://93.184.216.34/answers", events=(webhooks.ANSWERED,)
    )
    await add_webhook(sessions, "https://93.184.216.34/hanoi", province="01")
    now = utcnow()
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=now)
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        ticket_id = ticket.id
    steps = [
        (Action("classify", competence="ward"), operator),
        (Action("assign"), Actor.system()),
        (Action("claim"), staff),
        (Action("verify"), staff),
        (Action("confirm"), staff),
        (Action("answer", result="Đã thu gom.", photos=[PHOTO]), staff),
    ]
    for request, who in steps:
        async with sessions() as s, s.begin():
            found = await s.get(Ticket, ticket_id)
            assert found is not None
            await apply(s, found, request, who, POLICIES, now=now)
    rows = await deliveries(sessions)
    mine = [(r.event, json.loads(r.body)) for r in rows if r.webhook_id == everything.webhook.id]
    assert [e for e, _ in mine] == ["ticket.created"] + ["ticket.status_changed"] * 6 + [
        "ticket.answered"
    ]
    changes = [
        (b["previous_status"], b["ticket"]["status"]) for e, b in mine if "previous_status" in b
    ]
    assert changes == [
        ("received", "classified"),
        ("classified", "assigned"),
        ("assigned", "claimed"),
        ("claimed", "verifying"),
        ("verifying", "handling"),
        ("handling", "answered"),
    ]
    answered = mine[-1][1]["ticket"]
    assert answered["status"] == "answered" and answered["answered_at"] is not None
    assert [r.event for r in rows if r.webhook_id == answers.webhook.id] == ["ticket.answered"]
    # The other province's webhook hears nothing of this ticket.
    assert {r.webhook_id for r in rows} == {everything.webhook.id, answers.webhook.id}
    # One event id per event, the same for every webhook that hears it.
    ids = Counter(r.event_id for r in rows)
    assert sorted(ids.values()) == [1] * 7 + [2]


async def test_overdue_comes_from_the_deadline_pass(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    registered = await add_webhook(sessions, "https://93.184.216.34/x", events=(webhooks.OVERDUE,))
    now = utcnow()
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, now=now)
        code = ticket.code
    async with sessions() as s, s.begin():
        assert await escalate_overdue(s, POLICIES, now=now + timedelta(hours=1)) == []
    async with sessions() as s, s.begin():
        escalated = await escalate_overdue(s, POLICIES, now=now + timedelta(hours=7))
        assert len(escalated) == 1
    rows = await deliveries(sessions)
    assert [(r.webhook_id, r.event) for r in rows] == [(registered.webhook.id, "ticket.overdue")]
    assert json.loads(rows[0].body)["ticket"]["code"] == code


async def test_a_change_rolled_back_queues_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_webhook(sessions, "https://93.184.216.34/x")
    with pytest.raises(RuntimeError):
        async with sessions() as s, s.begin():
            await make_ticket(s)
            raise RuntimeError("the transaction fails after the ticket was made")
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s)
        staff = await actor(s, "operator", "P38")
        ticket_id = ticket.id
    before = len(await deliveries(sessions))
    with pytest.raises(RuntimeError):
        async with sessions() as s, s.begin():
            found = await s.get(Ticket, ticket_id)
            assert found is not None
            await apply(s, found, Action("classify", competence="ward"), staff, POLICIES)
            raise RuntimeError("rolled back after the transition")
    assert before == 1
    assert len(await deliveries(sessions)) == 1


async def test_a_hidden_case_and_a_disabled_webhook_hear_nothing(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    registered = await add_webhook(sessions, partner.hook_url)
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s)
        ticket.hidden_at = utcnow()
        operator = await actor(s, "operator", "P38")
        await apply(s, ticket, Action("classify", competence="ward"), operator, POLICIES)
    assert len(await deliveries(sessions)) == 1  # the ticket's creation, before it was hidden
    async with sessions() as s, s.begin():
        hook = await s.get(type(registered.webhook), registered.webhook.id)
        assert hook is not None
        await webhooks.disable(s, hook, actor="admin", now=utcnow())
        await make_ticket(s)
    rows = await deliveries(sessions)
    assert len(rows) == 1
    worker = worker_for(sessions, hook_settings)
    await worker.pump()
    await worker.stop()
    # What was queued before it was disabled is not sent either.
    assert partner.hooks() == []
    [row] = await deliveries(sessions)
    assert (row.status, row.last_error) == ("failed", "webhook disabled")


async def a_report_joined_with_a_hidden_case(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Two tickets made (their creations queued), then the first hidden from the public
    and the second joined with it; the second's id."""
    async with sessions() as s, s.begin():
        case, report = await make_ticket(s), await make_ticket(s)
    async with sessions() as s, s.begin():
        await s.execute(update(Ticket).where(Ticket.id == case.id).values(hidden_at=utcnow()))
        await s.execute(update(Ticket).where(Ticket.id == report.id).values(case_id=case.id))
    return report.id


async def test_a_report_joined_with_a_hidden_case_is_told_to_no_one(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    report_id = await a_report_joined_with_a_hidden_case(sessions)
    assert len(await deliveries(sessions)) == 2  # both creations
    async with sessions() as s, s.begin():
        report = await s.get(Ticket, report_id)
        assert report is not None
        operator = await actor(s, "operator", "P38")
        await apply(s, report, Action("classify", competence="ward"), operator, POLICIES)
    assert len(await deliveries(sessions)) == 2


async def test_an_event_queued_before_its_case_was_hidden_is_not_sent(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    # Both creations queued, then the case hidden and the report joined with it.
    await a_report_joined_with_a_hidden_case(sessions)
    worker = worker_for(sessions, hook_settings)
    await worker.pump()
    await worker.stop()
    assert partner.hooks() == []
    rows = await deliveries(sessions)
    assert [(r.status, r.last_error) for r in rows] == [
        ("failed", "case hidden from the public")
    ] * 2


async def test_retried_after_a_500_and_a_timeout_then_delivered(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    registered = await add_webhook(sessions, partner.hook_url)
    partner.script = [Answer(500), Answer(200, delay=2.0), Answer(200)]
    async with sessions() as s, s.begin():
        await make_ticket(s)
    clock = Clock()
    worker = worker_for(sessions, hook_settings, clock)
    assert await worker.pump() == 1
    [row] = await deliveries(sessions)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, 500)
    assert row.next_attempt_at >= clock.now + timedelta(seconds=29)
    # Not due yet: nothing is sent.
    assert await worker.pump() == 0
    clock.now = row.next_attempt_at
    assert await worker.pump() == 1
    [row] = await deliveries(sessions)
    assert (row.status, row.attempts, row.last_status) == ("pending", 2, None)
    assert row.last_error is not None and "timeout" in row.last_error
    # Backoff doubles (jitter fixed at its top here).
    assert row.next_attempt_at >= clock.now + timedelta(seconds=59)
    clock.now = row.next_attempt_at
    assert await worker.pump() == 1
    await worker.stop()
    [row] = await deliveries(sessions)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 3, 200)
    got = partner.hooks()
    assert len(got) == 3
    # The same body each time, each signed afresh.
    assert {g.raw for g in got} == {row.body.encode()}
    assert {g.event_id for g in got} == {row.event_id}
    assert all(verify(registered.secret, g.headers, g.raw) for g in got)


async def test_failed_after_the_day(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    partner.default = Answer(503)
    async with sessions() as s, s.begin():
        await make_ticket(s)
    clock = Clock()
    # Queued almost a day ago: the next try is at the day's end, whatever the backoff.
    async with sessions() as s, s.begin():
        await s.execute(
            update(WebhookDelivery).values(
                created_at=clock.now - timedelta(hours=24) + timedelta(seconds=10)
            )
        )
    worker = worker_for(sessions, hook_settings, clock)
    await worker.pump()
    [row] = await deliveries(sessions)
    assert row.status == "pending"
    assert row.next_attempt_at == row.created_at + timedelta(hours=24)
    clock.now = row.next_attempt_at
    await worker.pump()
    await worker.stop()
    [row] = await deliveries(sessions)
    assert (row.status, row.attempts, row.last_status) == ("failed", 2, 503)
    assert len(partner.hooks()) == 2


async def test_a_refusal_fails_after_a_few_tries_and_429_waits_as_asked(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    partner.script = [Answer(429, headers={"Retry-After": "600"})]
    partner.default = Answer(400)
    async with sessions() as s, s.begin():
        await make_ticket(s)
    clock = Clock()
    worker = worker_for(sessions, hook_settings, clock)
    await worker.pump()
    [row] = await deliveries(sessions)
    assert row.status == "pending" and row.next_attempt_at >= clock.now + timedelta(seconds=600)
    for _ in range(2):
        clock.now = row.next_attempt_at
        assert await worker.pump() == 1
        [row] = await deliveries(sessions)
    await worker.stop()
    # A 400 is a refusal: failed at the third attempt (webhook_refused_attempts).
    assert (row.status, row.attempts, row.last_status) == ("failed", 3, 400)
    assert row.last_error == "HTTP 400: ok"


async def test_a_redirect_is_not_followed(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    partner.default = Answer(302, headers={"Location": partner.url + "/elsewhere"})
    async with sessions() as s, s.begin():
        await make_ticket(s)
    worker = worker_for(sessions, hook_settings)
    await worker.pump()
    await worker.stop()
    assert [r.path for r in partner.received] == ["/hook"]
    [row] = await deliveries(sessions)
    assert (row.status, row.last_status) == ("pending", 302)


async def test_a_slow_answer_within_the_timeout_is_delivered_once(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    partner.default = Answer(200, delay=0.8)
    async with sessions() as s, s.begin():
        await make_ticket(s)
    worker = worker_for(sessions, hook_settings)
    worker.start()  # polling every 50 ms while the answer takes 800 ms
    deadline = time.monotonic() + 10
    while (await deliveries(sessions))[0].status != "delivered":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    await worker.stop()
    assert len(partner.hooks()) == 1


async def test_addresses_inside_the_network_are_refused_at_delivery(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    # Registered while private addresses were allowed; now they are not.
    port = partner.url.rsplit(":", 1)[1]
    await add_webhook(sessions, partner.hook_url)
    # A name (this machine's) that resolves to the loopback: refused when resolved.
    await add_webhook(sessions, f"http://vm:{port}/hook")
    async with sessions() as s, s.begin():
        await make_ticket(s)
    strict = hook_settings.model_copy(update={"webhook_allow_private": False})
    worker = worker_for(sessions, strict)
    assert await worker.pump() == 2
    await worker.stop()
    assert partner.received == []
    rows = await deliveries(sessions)
    assert [(r.status, r.last_error) for r in rows] == [
        ("pending", "URL refused: private_address"),
        ("pending", "address not allowed"),
    ]
    with pytest.raises(webhooks.WebhookError, match="private_address"):
        async with sessions() as s, s.begin():
            await webhooks.register(
                s,
                name="x",
                url=f"https://vm:{port}/hook",
                province_code="38",
                events=webhooks.EVENTS,
                actor="admin",
                user_id=None,
                allow_http=False,
                allow_private=False,
            )


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://93.184.216.34/x", "not_https"),
        ("https://127.0.0.1/x", "private_address"),
        ("https://10.1.2.3/x", "private_address"),
        ("https://192.168.1.1/x", "private_address"),
        ("https://169.254.169.254/latest/meta-data", "private_address"),
        ("https://100.64.0.1/x", "private_address"),
        ("https://[::1]/x", "private_address"),
        ("https://[::ffff:127.0.0.1]/x", "private_address"),
        ("https://[fd00::1]/x", "private_address"),
        # IPv4 inside IPv6: NAT64, local NAT64, 6to4, IPv4-compatible, Teredo.
        ("https://[64:ff9b::a00:5]/x", "private_address"),
        ("https://[64:ff9b:1::a00:5]/x", "private_address"),
        ("https://[2002:7f00:1::]/x", "private_address"),
        ("https://[::7f00:1]/x", "private_address"),
        ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", "private_address"),
        ("https://192.0.0.8/x", "private_address"),
        ("https://0.0.0.0/x", "private_address"),
        ("https://localhost/x", "private_address"),
        ("https://a.localhost/x", "private_address"),
        ("javascript:alert(1)", "bad_url"),
        ("ftp://93.184.216.34/x", "bad_url"),
        ("https:///x", "bad_url"),
        ("https://user:pw@93.184.216.34/x", "bad_url"),
        ("https://93.184.216.34:99999/x", "bad_url"),
        ("https://93.184.216.34:0/x", "bad_url"),
        ("https://" + "ổ" * 70 + ".vn/x", "bad_url"),
        ("https://a..b/x", "bad_url"),
        ("https://xn--cng-ema.invalid/x", "unresolvable"),
        ("https://93.184.216.34/x#frag", "bad_url"),
        ("https://exa mple.com/x", "bad_url"),
        ("https://93.184.216.34/\x00", "bad_url"),
        ("https://" + "a" * 3000 + ".vn/", "bad_url"),
        ("https://no-such-host.invalid/x", "unresolvable"),
    ],
)
async def test_registration_refuses_bad_and_inside_addresses(
    sessions: async_sessionmaker[AsyncSession], url: str, code: str
) -> None:
    with pytest.raises(webhooks.WebhookError) as refused:
        async with sessions() as s, s.begin():
            await webhooks.register(
                s,
                name="x",
                url=url,
                province_code="38",
                events=webhooks.EVENTS,
                actor="admin",
                user_id=None,
                allow_http=False,
                allow_private=False,
            )
    assert refused.value.code == code


EMBEDDED = [
    "64:ff9b::a00:5",
    "64:ff9b::7f00:1",
    "64:ff9b:1::a9fe:a9fe",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "::7f00:1",
    "::a00:5",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "192.0.0.8",
]


async def test_ipv4_inside_ipv6_is_refused_when_resolved(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings
) -> None:
    """A partner's name whose DNS answers one of these (an AAAA record reaching the
    internal network through NAT64, 6to4 or Teredo) is never connected to."""

    class Answers(ThreadedResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                ResolveResult(hostname=host, host=a, port=port, family=0, proto=0, flags=0)
                for a in answers
            ]

    strict = GuardedResolver(allow_private=False)
    strict._inner = Answers()
    for address in EMBEDDED:
        answers = [address]
        assert not webhooks.address_allowed(address, False), address
        with pytest.raises(AddressRefused):
            await strict.resolve("partner.example.vn", 443)
    # A public IPv6 and IPv4 address still pass; the refused ones are dropped among them.
    answers = [*EMBEDDED, "2606:4700:4700::1111", "93.184.216.34"]
    found = await strict.resolve("partner.example.vn", 443)
    assert [r["host"] for r in found] == ["2606:4700:4700::1111", "93.184.216.34"]
    # Allowed when private addresses are (a partner on the same network).
    assert all(webhooks.address_allowed(a, True) for a in EMBEDDED)


def test_a_vietnamese_name_is_checked_in_its_ascii_form() -> None:
    target = webhooks.check_url(
        "https://cổngdịchvụcông.vn/hook", allow_http=False, allow_private=False
    )
    assert target.host == "xn--cngdchvcng-ybb7772gvda7j.vn"
    assert target.port == 443


async def test_the_secret_is_sealed_at_rest(sessions: async_sessionmaker[AsyncSession]) -> None:
    registered = await add_webhook(sessions, "https://93.184.216.34/x")
    async with sessions() as s:
        raw = await s.scalar(text("SELECT secret FROM webhooks"))
    assert raw and registered.secret not in raw


async def test_without_a_public_url_the_case_link_is_null(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    webhooks.configure(None)
    await add_webhook(sessions, "https://93.184.216.34/x")
    async with sessions() as s, s.begin():
        await make_ticket(s)
    [row] = await deliveries(sessions)
    assert json.loads(row.body)["ticket"]["url"] is None


def test_backoff_doubles_up_to_an_hour_with_jitter(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    top = worker_for(sessions, settings)
    low = WebhookWorker(sessions, Presence(sessions, alone=True), settings, jitter=lambda: 0.0)
    assert [top.backoff(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]
    assert [low.backoff(n) for n in (1, 2, 3)] == [15.0, 30.0, 60.0]
    assert top.backoff(30) == 3600.0 and low.backoff(30) == 1800.0


async def test_a_huge_answer_is_read_in_part_and_kept_short(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    partner.default = Answer(500, body="\x00<b>" + "x" * 5_000_000)
    async with sessions() as s, s.begin():
        await make_ticket(s)
    worker = worker_for(sessions, hook_settings)
    await worker.pump()
    await worker.stop()
    [row] = await deliveries(sessions)
    assert row.status == "pending" and row.last_status == 500
    assert row.last_error is not None and len(row.last_error) <= 220
    assert row.last_error.startswith("HTTP 500: <b>xxx") and "\x00" not in row.last_error


async def test_a_process_leases_no_more_than_it_sends_at_once(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings
) -> None:
    await add_webhook(sessions, "https://93.184.216.34/x")
    async with sessions() as s, s.begin():
        for _ in range(6):
            await make_ticket(s)
    narrow = hook_settings.model_copy(update={"webhook_concurrency": 2})
    worker = worker_for(sessions, narrow)
    leased = await worker._claim()
    assert len(leased) == 2
    async with sessions() as s:
        held = await s.scalar(select(func.count()).where(WebhookDelivery.lease_owner.is_not(None)))
    assert held == 2
    await worker.stop()
    # Handed back at stop, for the others.
    async with sessions() as s:
        held = await s.scalar(select(func.count()).where(WebhookDelivery.lease_owner.is_not(None)))
    assert held == 0


async def test_two_processes_deliver_each_event_once(
    sessions: async_sessionmaker[AsyncSession], hook_settings: Settings, partner: Partner
) -> None:
    await add_webhook(sessions, partner.hook_url)
    partner.default = Answer(200, delay=0.1)
    async with sessions() as s, s.begin():
        for _ in range(40):
            await make_ticket(s)
    presences = [Presence(sessions, alone=False) for _ in range(2)]
    workers = [worker_for(sessions, hook_settings, presence=p) for p in presences]
    for presence in presences:
        await presence.beat()
        presence.start()
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    async with sessions() as s:
        while await s.scalar(select(func.count()).where(WebhookDelivery.status != "delivered")):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    for worker in workers:
        await worker.stop()
    for presence in presences:
        await presence.stop()
    counts = Counter(r.event_id for r in partner.hooks())
    assert len(counts) == 40
    assert set(counts.values()) == {1}, counts.most_common(3)
    assert all(r.attempts == 1 for r in await deliveries(sessions))


async def test_a_delivery_that_cannot_be_tried_backs_off_and_fails_at_the_day(
    sessions: async_sessionmaker[AsyncSession],
    hook_settings: Settings,
    partner: Partner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook whose sealed secret no longer opens (the data key changed without it):
    its delivery counts an attempt and backs off instead of being leased at every poll
    ahead of the others, and fails at the day's end."""
    poisoned = await add_webhook(sessions, partner.hook_url)
    good = await add_webhook(sessions, partner.hook_url)
    async with sessions() as s, s.begin():
        await s.execute(
            text("UPDATE webhooks SET secret = :sealed WHERE id = :id"),
            {"sealed": "gone.AAAA", "id": poisoned.webhook.id},
        )
    # The report is taken and its events queued all the same.
    async with sessions() as s, s.begin():
        await make_ticket(s)
    clock = Clock()
    # One delivery at a time: the unreadable one, the older, is leased first.
    one = hook_settings.model_copy(update={"webhook_concurrency": 1})
    worker = worker_for(sessions, one, clock)
    assert await worker.pump() == 1
    bad, waiting = await deliveries(sessions)
    assert bad.webhook_id == poisoned.webhook.id
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    assert (bad.status, bad.attempts, bad.lease_owner) == ("pending", 1, None)
    assert bad.last_error is not None and bad.last_error.startswith("not sent: ")
    assert bad.next_attempt_at >= clock.now + timedelta(seconds=29)
    # The next poll sends the other partner's delivery, not the unreadable one again.
    assert await worker.pump() == 1
    bad, sent = await deliveries(sessions)
    assert (sent.webhook_id, sent.status) == (good.webhook.id, "delivered")
    assert bad.attempts == 1
    assert [verify(good.secret, g.headers, g.raw) for g in partner.hooks()] == [True]
    # At the day's end it is failed, not retried for ever.
    clock.now = bad.created_at + timedelta(hours=24)
    assert await worker.pump() == 1
    await worker.stop()
    bad, _ = await deliveries(sessions)
    assert (bad.status, bad.attempts) == ("failed", 2)
    assert any("failed after 2 attempt(s)" in r.getMessage() for r in caplog.records)
    assert not any("gone.AAAA" in r.getMessage() for r in caplog.records)
