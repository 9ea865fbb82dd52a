"""One-time passwords over real HTTP: the first login with a password `create-user` or an
admin reset gave leads to the change-password page, every other page and the JSON API
wait for the change, and demo accounts log in only while the demo runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.services.demo import seed_demo_accounts
from tests.e2e.conftest import running
from tests.e2e.staff_http import (
    Visitor,
    base_url,
    first_login_account,
    form_token,
    staff_account,
    web_settings,
)

CHOSEN = "ngõ nhỏ phố nhỏ nhà tôi ở đó"


async def test_a_one_time_password_must_be_changed_before_anything_else(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    once = await first_login_account(sessions, "lan")
    await staff_account(sessions, "root", "the admin's own passphrase", "admin", None)
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    async with running(settings), Visitor() as lan, Visitor() as admin:
        first = await lan.log_in(base, "lan", once)
        assert (first.status, first.location) == (303, "/password")
        for path in ("/queue", "/stats", "/tickets/38-000001", "/intake/phone", "/admin"):
            sent = await lan.get(f"{base}{path}")
            assert (sent.status, sent.location) == (303, "/password"), path
        api = await lan.get(f"{base}/api/v1/tickets")
        assert api.status == 403
        assert json.loads(api.text)["error"] == "password_change_required"
        assert (await lan.get(f"{base}/static/app.css")).status == 200
        page = await lan.get(f"{base}/password")
        assert page.status == 200 and 'name="current"' in page.text

        changed = await lan.post_form(
            base, "/password", "/password", {"current": once, "new": CHOSEN, "again": CHOSEN}
        )
        assert changed.status == 303
        assert (await lan.get(f"{base}/queue")).status == 200
        assert (await lan.get(f"{base}/api/v1/tickets")).status == 200

        # An admin reset gives a new one-time password, which must be changed again.
        assert (await admin.log_in(base, "root", "the admin's own passphrase")).status == 303
        listing = await admin.get(f"{base}/admin")
        user_id = re.search(r'<b>lan</b>.*?action="/admin/users/(\d+)"', listing.text, re.S)
        assert user_id is not None
        reset = await admin.post_form(base, "/admin", f"/admin/users/{user_id[1]}", {"do": "reset"})
        given = re.search(r"<code>([^<]+)</code>", reset.text)
        assert reset.status == 200 and given is not None
        # The reset ended Lan's sessions.
        assert (await lan.get(f"{base}/queue")).location == "/login"
        assert (await lan.log_in(base, "lan", CHOSEN)).status == 401
        again = await lan.log_in(base, "lan", given[1])
        assert (again.status, again.location) == (303, "/password")
        assert (await lan.get(f"{base}/queue")).location == "/password"

        # Signing out stays possible while the change waits.
        page = await lan.get(f"{base}/password")
        out = await lan.request(
            "POST", f"{base}/logout", data={"csrf": form_token(page.text, "/logout")}
        )
        assert (out.status, out.location) == (303, "/login")
        assert (await lan.get(f"{base}/password")).location == "/login"


async def test_demo_accounts_log_in_only_while_the_demo_runs(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        accounts = {a.username: a.password for a in await seed_demo_accounts(s)}
    password = accounts["demo-operator"]
    demo_on = web_settings(database_url, tmp_path, demo=True)
    async with running(demo_on), Visitor() as trainee:
        signed_in = await trainee.log_in(base_url(demo_on), "demo-operator", password)
        assert (signed_in.status, signed_in.location) == (303, "/queue")
        assert (await trainee.get(f"{base_url(demo_on)}/queue")).status == 200

        demo_off = web_settings(database_url, tmp_path)
        base = base_url(demo_off)
        async with running(demo_off), Visitor() as other:
            # The session made while the demo ran is not honoured without it.
            assert (await trainee.get(f"{base}/queue")).location == "/login"
            api = await trainee.get(f"{base}/api/v1/tickets")
            assert api.status == 401
            # The right password is answered as a wrong one.
            right = await other.log_in(base, "demo-operator", password)
            wrong = await other.log_in(base, "demo-operator", "not the password")
            assert right.status == wrong.status == 401
            error = re.compile(r'<p class="error" role="alert">(.*?)</p>')
            assert error.findall(right.text) == error.findall(wrong.text)
            assert error.findall(right.text) == ["Sai tên đăng nhập hoặc mật khẩu."]
