"""The admin page for partners' webhooks through the running service, as an admin's
browser uses it: register (the secret shown once), a test event delivered to a partner
on 127.0.0.1 and shown in the log, a ticket's event delivered by the server's worker,
disable; and what a hostile or unauthorised visitor tries on its forms."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import AuditEvent, Webhook, WebhookDelivery, utcnow
from tests.e2e.conftest import running
from tests.e2e.staff_http import Visitor, base_url, form_token, staff_account, web_settings
from tests.factories import make_ticket
from tests.fakes.partner import Partner, verify

PASSWORD = "a long and private passphrase"
PAGE = "/admin/webhooks"


def settings_for(database_url: str, tmp_path: Path, *, opt_in: bool) -> Settings:
    return web_settings(
        database_url,
        tmp_path,
        webhook_allow_http=opt_in,
        webhook_allow_private=opt_in,
        webhook_poll_interval=0.1,
        webhook_timeout=2.0,
    )


def registration(url: str, **extra: str) -> dict[str, str]:
    return {
        "name": "Cổng PAHT Thanh Hóa",
        "url": url,
        "province": "38",
        "event.ticket.created": "1",
        "event.ticket.answered": "1",
        **extra,
    }


async def count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def wait_for(visitor: Visitor, url: str, needle: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = await visitor.get(url)
        if needle in page.text:
            return page.text
        assert time.monotonic() < deadline, page.text[-3000:]
        await asyncio.sleep(0.2)


async def test_register_secret_once_test_event_log_and_disable(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    partner = Partner()
    await partner.start()
    settings = settings_for(database_url, tmp_path, opt_in=True)
    base = base_url(settings)
    await staff_account(sessions, "boss", PASSWORD, role="admin", unit=None)
    try:
        async with running(settings), Visitor() as admin:
            assert (await admin.log_in(base, "boss", PASSWORD)).status == 303
            assert f'href="{PAGE}"' in (await admin.get(f"{base}/admin")).text
            answer = await admin.post_form(base, PAGE, PAGE, registration(partner.hook_url))
            # Post, redirect, get: the answer to the form is a redirect to the page.
            assert (answer.status, answer.location) == (303, PAGE), answer.text
            assert "whsec_" not in answer.text and "whsec_" not in str(answer.set_cookie)
            # The sealed cookie, replayed in another session (even the same admin's), or
            # altered, shows nothing.
            [cookie] = [c.split(";", 1)[0] for c in answer.set_cookie if "webhook_secret" in c]
            async with Visitor() as elsewhere:
                assert (await elsewhere.log_in(base, "boss", PASSWORD)).status == 303
                stolen = await elsewhere.get(f"{base}{PAGE}", headers={"Cookie": cookie})
                assert stolen.status == 200 and "whsec_" not in stolen.text
                altered = await elsewhere.get(f"{base}{PAGE}", headers={"Cookie": cookie[:-3]})
                assert altered.status == 200 and "whsec_" not in altered.text
            result = await admin.get(f"{base}{answer.location}")
            assert result.status == 200
            # The page says the retry window and the tries a refusal gets, as set.
            assert "gửi lại trong 24 giờ" in result.text and "được thử 3 lần" in result.text
            found = re.search(r'id="webhook-secret">([^<]+)<', result.text)
            assert found is not None
            secret = found.group(1)
            assert secret.startswith("whsec_") and len(secret) > 40
            # Shown once: reloading the page neither registers again nor shows it again,
            # nor does the cookie sent again in the same session.
            for headers in ({}, {"Cookie": cookie}):
                page = await admin.get(f"{base}{PAGE}", headers=headers)
                assert page.status == 200
                assert secret not in page.text and partner.hook_url in page.text
                assert 'id="webhook-secret"' not in page.text
            assert await count(sessions, Webhook) == 1
            async with sessions() as s:
                hook = await s.scalar(select(Webhook))
                assert hook is not None
                assert hook.events == ["ticket.created", "ticket.answered"]
                hook_id = hook.id

            ping = f"{PAGE}/{hook_id}/ping"
            answer = await admin.post_form(base, PAGE, ping, {})
            assert (answer.status, answer.location) == (303, f"{PAGE}?done=ping")
            queued = await admin.get(f"{base}{answer.location}")
            assert "sự kiện thử" in queued.text
            # The page shown after it, reloaded, sends nothing more.
            await admin.get(f"{base}{answer.location}")
            [got] = await partner.wait(1)
            assert verify(secret, got.headers, got.raw)
            assert got.body["type"] == "ping" and got.headers["X-Hotline-Event"] == "ping"
            shown = await wait_for(admin, f"{base}{PAGE}", 'class="status-delivered"')
            assert got.event_id in shown

            # A ticket's creation reaches the partner through the server's own worker.
            async with sessions() as s, s.begin():
                ticket = await make_ticket(s)
                code = ticket.code
            received = await partner.wait(2)
            created = received[1]
            assert verify(secret, created.headers, created.raw)
            assert created.body["ticket"]["code"] == code
            assert created.body["ticket"]["url"] == f"{base}/r/{code}"

            answer = await admin.post_form(base, PAGE, f"{PAGE}/{hook_id}/disable", {})
            assert (answer.status, answer.location) == (303, f"{PAGE}?done=disabled")
            disabled = await admin.get(f"{base}{answer.location}")
            assert f'action="{ping}"' not in disabled.text
            token = form_token(disabled.text, "/logout")
            refused = await admin.request("POST", f"{base}{ping}", data={"csrf": token})
            assert refused.status == 422
            async with sessions() as s, s.begin():
                await make_ticket(s)
            await asyncio.sleep(0.5)
            assert len(partner.hooks()) == 2
        async with sessions() as s:
            audits = list(
                await s.execute(
                    select(AuditEvent.action, AuditEvent.ticket_id, AuditEvent.note).where(
                        AuditEvent.action.like("webhook_%")
                    )
                )
            )
        assert [(a, t) for a, t, _ in audits] == [
            ("webhook_register", None),
            ("webhook_ping", None),
            ("webhook_disable", None),
        ]
        assert all(secret not in (note or "") for _, _, note in audits)
    finally:
        await partner.stop()


async def test_failed_deliveries_are_shown_first(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = settings_for(database_url, tmp_path, opt_in=False)
    base = base_url(settings)
    await staff_account(sessions, "boss", PASSWORD, role="admin", unit=None)
    async with sessions() as s, s.begin():
        hook = Webhook(
            name="Cổng <b>PAHT</b>",
            url="https://93.184.216.34/hook",
            province_code="38",
            events=["ticket.created"],
            secret="whsec_x",
        )
        s.add(hook)
        await s.flush()
        s.add(
            WebhookDelivery(
                webhook_id=hook.id,
                event="ticket.created",
                event_id="11111111-2222-3333-4444-555555555555",
                body="{}",
                status="failed",
                attempts=31,
                last_status=503,
                last_error="HTTP 503: <script>alert(1)</script>",
                created_at=utcnow(),
            )
        )
    async with running(settings), Visitor() as admin:
        await admin.log_in(base, "boss", PASSWORD)
        page = (await admin.get(f"{base}{PAGE}")).text
    alert = page.split('class="failed-deliveries" role="alert"', 1)[1].split("</section>", 1)[0]
    assert "1 lần gửi thất bại" in alert
    assert "11111111-2222-3333-4444-555555555555" in alert and "503" in alert
    # What a partner answered, and an admin typed, is shown escaped.
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "<b>PAHT</b>" not in page


async def test_hostile_and_unauthorised_use_of_the_forms(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = settings_for(database_url, tmp_path, opt_in=False)
    base = base_url(settings)
    await staff_account(sessions, "boss", PASSWORD, role="admin", unit=None)
    await staff_account(sessions, "op", PASSWORD, role="operator", unit="P38")
    public = "https://93.184.216.34/hook"
    async with running(settings):
        async with Visitor() as nobody:
            assert (await nobody.get(f"{base}{PAGE}")).status == 303
            assert (await nobody.request("POST", f"{base}{PAGE}", data={})).status == 403
        async with Visitor() as operator:
            await operator.log_in(base, "op", PASSWORD)
            assert (await operator.get(f"{base}{PAGE}")).status == 403
            token = form_token((await operator.get(f"{base}/queue")).text, "/logout")
            answer = await operator.request(
                "POST", f"{base}{PAGE}", data={**registration(public), "csrf": token}
            )
            assert answer.status == 403
        async with Visitor() as admin:
            await admin.log_in(base, "boss", PASSWORD)
            # No CSRF token, or another one: refused before anything is read.
            assert (
                await admin.request("POST", f"{base}{PAGE}", data=registration(public))
            ).status == 403
            wrong = {**registration(public), "csrf": "x" * 43}
            assert (await admin.request("POST", f"{base}{PAGE}", data=wrong)).status == 403
            for url, says in [
                ("http://93.184.216.34/hook", "https"),
                ("https://127.0.0.1/hook", "mạng nội bộ"),
                ("https://10.0.0.5/hook", "mạng nội bộ"),
                ("https://169.254.169.254/latest", "mạng nội bộ"),
                ("https://[::1]/hook", "mạng nội bộ"),
                ("https://localhost/hook", "mạng nội bộ"),
                ("https://vm/hook", "mạng nội bộ"),
                ("gopher://93.184.216.34/", "không hợp lệ"),
                ("https://u:p@93.184.216.34/", "không hợp lệ"),
                ("https://" + "x" * 5000 + ".vn/", "không hợp lệ"),
                ("", "không hợp lệ"),
            ]:
                answer = await admin.post_form(base, PAGE, PAGE, registration(url))
                assert answer.status == 422, url
                assert says in answer.text, url
            for form in [
                registration(public, name="x" * 5000),
                registration(public, name=" "),
                registration(public, province="99"),
                registration(public, province="38' OR '1'='1"),
                {"name": "n", "url": public, "province": "38", "event.bogus": "1"},
            ]:
                answer = await admin.post_form(base, PAGE, PAGE, form)
                assert answer.status == 422, form
            assert await count(sessions, Webhook) == 0
            # Larger than any form: refused whole.
            huge = await admin.post_form(base, PAGE, PAGE, registration(public, name="x" * 100_000))
            assert huge.status == 413
            # NUL characters are dropped, never stored.
            answer = await admin.post_form(
                base, PAGE, PAGE, registration(public, name="Cổng\x00 PAHT")
            )
            assert answer.status == 303
            async with sessions() as s:
                names = list(await s.scalars(select(Webhook.name)))
            assert names == ["Cổng PAHT"]
            token = form_token((await admin.get(f"{base}{PAGE}")).text, "/logout")
            for path, status in [
                (f"{PAGE}/999999999/ping", 404),
                (f"{PAGE}/999999999/disable", 404),
                (f"{PAGE}/abc/ping", 404),
                (f"{PAGE}/1234567890123/ping", 404),
            ]:
                answer = await admin.request("POST", f"{base}{path}", data={"csrf": token})
                assert answer.status == status, path
            assert (await admin.get(f"{base}{PAGE}/1/ping")).status == 405
            assert (await admin.request("DELETE", f"{base}{PAGE}")).status == 405
    assert await count(sessions, WebhookDelivery) == 0
