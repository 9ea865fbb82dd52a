"""Partner keys on the admin page: issued (shown once, only its hash kept), revoked, by an
admin only, with the CSRF token, audited; and the key's use in Open311 follows."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import AuditEvent, PartnerKey
from backend.services.partners import find_key, issue_key, revoke_key
from tests.e2e.conftest import running
from tests.e2e.open311_http import IN_BIM_SON, ROOT
from tests.e2e.staff_http import (
    Visitor,
    base_url,
    form_token,
    sign_in,
    staff_account,
    web_settings,
)

PASSWORD = "a long and private passphrase"


async def _post_open311(base: str, key: str) -> int:
    form = {"api_key": key, "service_code": "dumping", **IN_BIM_SON}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}{ROOT}/requests.json", data=form) as r,
    ):
        return r.status


async def test_an_admin_issues_a_key_shown_once_and_revokes_it(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    await staff_account(sessions, "root", PASSWORD, "admin", None)
    async with running(settings), Visitor() as admin:
        assert (await admin.log_in(base, "root", PASSWORD)).status == 303
        issued = await admin.post_form(
            base, "/admin", "/admin/partner-keys", {"name": "Cổng PAHT Thanh Hóa", "province": "38"}
        )
        assert issued.status == 200
        shown = re.search(
            r'class="ok secret".*?<code>([A-Za-z0-9_-]{43})</code>', issued.text, re.S
        )
        assert shown is not None
        key = shown[1]
        async with sessions() as s:
            row = await s.scalar(select(PartnerKey).where(PartnerKey.name == "Cổng PAHT Thanh Hóa"))
            assert row is not None
            assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
            assert (row.key_hint, row.province_code) == (key[:6], "38")
            assert key not in repr(vars(row))
        # Shown once: the page lists its hint only afterwards.
        again = await admin.get(f"{base}/admin")
        assert key not in again.text and f"{key[:6]}…" in again.text
        assert await _post_open311(base, key) == 200
        # Refused: no province, an unknown one.
        bad = await admin.post_form(
            base, "/admin", "/admin/partner-keys", {"name": "x", "province": "99"}
        )
        assert bad.status == 422
        revoked = await admin.post_form(base, "/admin", f"/admin/partner-keys/{row.id}/revoke", {})
        assert revoked.status == 200
        assert await _post_open311(base, key) == 403
        # The revoked key has no revoke button; revoking it again, or a key that is not
        # there, is 404.
        page = await admin.get(f"{base}/admin")
        assert f"/admin/partner-keys/{row.id}/revoke" not in page.text
        token = {"csrf": form_token(page.text, "/admin/partner-keys")}
        for missing in (row.id, 999_999):
            url = f"{base}/admin/partner-keys/{missing}/revoke"
            assert (await admin.request("POST", url, data=token)).status == 404
    async with sessions() as s:
        trail = list(
            await s.execute(
                select(AuditEvent.actor, AuditEvent.action, AuditEvent.note)
                .where(AuditEvent.action.like("partner_key_%"))
                .order_by(AuditEvent.id)
            )
        )
    assert [a for _, a, _ in trail] == ["partner_key_issue", "partner_key_revoke"]
    assert all(actor.startswith("user:") for actor, _, _ in trail)
    assert all(note is not None and key not in note for _, _, note in trail)


async def test_only_an_admin_with_the_csrf_token_issues_or_revokes(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = web_settings(database_url, tmp_path)
    base = base_url(settings)
    await staff_account(sessions, "root", PASSWORD, "admin", None)
    await staff_account(sessions, "op", PASSWORD, "operator", "P38")
    async with sessions() as s, s.begin():
        issued = await issue_key(s, "38", "existing")
    async with (
        running(settings),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as operator,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin,
        aiohttp.ClientSession() as anonymous,
    ):
        csrf = await sign_in(operator, base, "op", PASSWORD)
        form = {"csrf": csrf, "name": "sneaky", "province": "38"}
        async with operator.post(f"{base}/admin/partner-keys", data=form) as r:
            assert r.status == 403
        async with operator.post(
            f"{base}/admin/partner-keys/{issued.key_id}/revoke", data={"csrf": csrf}
        ) as r:
            assert r.status == 403
        await sign_in(admin, base, "root", PASSWORD)
        async with admin.post(
            f"{base}/admin/partner-keys", data={"name": "no token", "province": "38"}
        ) as r:
            assert r.status == 403
        async with admin.post(
            f"{base}/admin/partner-keys/{issued.key_id}/revoke", data={"csrf": "forged"}
        ) as r:
            assert r.status == 403
        async with anonymous.post(
            f"{base}/admin/partner-keys", data=form, allow_redirects=False
        ) as r:
            assert r.status in (303, 401, 403)
    async with sessions() as s:
        names = list(await s.scalars(select(PartnerKey.name)))
        assert names == ["existing"]
        assert await find_key(s, issued.key) is not None


async def test_keys_are_checked_by_their_hash_and_revoked_for_good(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        first = await issue_key(s, "38", "  Portal   A ")
        second = await issue_key(s, "79", "Portal B")
    assert first.name == "Portal A" and len(first.key) >= 43 and first.key != second.key
    async with sessions() as s, s.begin():
        found = await find_key(s, first.key)
        assert found is not None and found.id == first.key_id and found.province_code == "38"
        assert await find_key(s, first.key[:-1]) is None
        assert await find_key(s, first.key + "x") is None
        assert await find_key(s, "") is None
        assert await find_key(s, None) is None
        assert await find_key(s, "\ud800" * 3) is None
        assert await revoke_key(s, first.key_id)
        assert not await revoke_key(s, first.key_id)
        assert not await revoke_key(s, 999_999)
    async with sessions() as s, s.begin():
        assert await find_key(s, first.key) is None
        found = await find_key(s, second.key)
        assert found is not None and found.province_code == "79"
        for province, name in (
            ("99", "x"),
            ("3", "x"),
            ("38", ""),
            ("38", "x" * 101),
            ("38", "a\x00b"),
        ):
            try:
                await issue_key(s, province, name)
            except ValueError:
                continue
            raise AssertionError(f"issued for {province!r}, {name!r}")
