"""The phone form's ward: a name is looked for in the operator's own province first, a
name several wards share is offered as a choice, and the code of what was filed is
always shown, to be read back to the caller."""

from __future__ import annotations

import re

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Ticket
from backend.services.units import WardIndex
from tests.e2e.conftest import running
from tests.e2e.staff_http import sign_in
from tests.factories import make_user
from tests.fakes.nominatim import BIM_SON_MARKET, FakeNominatim

PASSWORD = "a long and private passphrase"


async def shared_name(sessions: async_sessionmaker[AsyncSession]) -> str:
    """A ward name of province 38 that another province also has, one the plain search
    finds elsewhere first (as "Tân Tiến" was)."""
    async with sessions() as s:
        wards = await WardIndex.load(s)
    for ward in sorted(wards._wards, key=lambda w: w.code):
        if ward.province_code != "38":
            continue
        name = ward.name.removeprefix("Phường ").removeprefix("Xã ")
        same = wards.meant(name, "38")
        first = wards.search(name)
        if len(same) == 1 and first and first[0].province_code != "38":
            return name
    pytest.fail("no ward name of province 38 that another province shares")


async def file(settings: Settings, operator: str, fields: dict[str, str]) -> tuple[int, str, str]:
    """Post the phone form as the operator; (status, final URL, page)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        base = settings.public_url or ""
        csrf = await sign_in(http, base, operator, PASSWORD)
        form = {"csrf": csrf, "category": "dumping", "description": "Rác đổ bên đường.", **fields}
        async with http.post(f"{base}/intake/phone", data=form) as r:
            return r.status, str(r.url), await r.text()


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_ward_name_another_province_shares_is_the_operators_own(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    name = await shared_name(sessions)
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
    async with running(chat_settings):
        status, url, page = await file(chat_settings, operator, {"ward": name})
    assert status == 200, page
    code = url.rsplit("/", 1)[1]
    assert code.startswith("38-") and code in page
    async with sessions() as s:
        ticket = (await s.scalars(select(Ticket))).one()
    assert ticket.code == code and ticket.ward_code in {
        w.code for w in (await _index(sessions)).meant(name, "38")
    }


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_name_several_wards_share_is_offered_as_a_choice(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
    async with running(chat_settings):
        status, _, page = await file(chat_settings, operator, {"ward": "Tân"})
        assert status == 422
        assert "Có nhiều xã/phường mang tên này" in page
        offered = re.findall(r'name="ward" value="(\d{5})"', page)
        assert len(offered) > 1
        index = await _index(sessions)
        assert all(index.get(code).province_code == "38" for code in offered)  # type: ignore[union-attr]
        async with sessions() as s:
            assert list(await s.scalars(select(Ticket))) == [], "nothing filed yet"
        status, url, page = await file(chat_settings, operator, {"ward": offered[1]})
    assert status == 200
    async with sessions() as s:
        ticket = (await s.scalars(select(Ticket))).one()
    assert ticket.ward_code == offered[1] and url.endswith(f"/tickets/{ticket.code}")


async def _index(sessions: async_sessionmaker[AsyncSession]) -> WardIndex:
    async with sessions() as s:
        return await WardIndex.load(s)


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_typed_address_with_a_ward_is_kept_and_looked_up_within_the_ward(
    chat_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The ward picked and an address typed: the address is kept, and its point is used
    when the geocoder finds it in the ward; else the ward's centre, marked approximate on
    the ticket's page and in the API."""
    nominatim = FakeNominatim()
    settings = chat_settings.model_copy(update={"nominatim_url": await nominatim.start()})
    async with sessions() as s, s.begin():
        operator = (await make_user(s, "operator", "P38", password=PASSWORD)).username
    try:
        async with running(settings):
            found = await file(
                settings, operator, {"ward": "14812", "place": "Chợ Bỉm Sơn, Trần Phú"}
            )
            unknown = await file(settings, operator, {"ward": "14812", "place": "Ngõ 7 xóm Bến"})
            # No ward picked; the address names only a ward: its centre, approximate.
            named = await file(settings, operator, {"place": "Phường Bỉm Sơn, Thanh Hóa"})
            # A point on the map keeps the words typed with it.
            pinned = await file(
                settings, operator, {"point": "20.0762, 105.9051", "place": "cổng chợ"}
            )
    finally:
        await nominatim.stop()
    codes = [url.rsplit("/", 1)[1] for _, url, _ in (found, unknown, named, pinned)]
    async with sessions() as s:
        tickets = {t.code: t for t in await s.scalars(select(Ticket).where(Ticket.code.in_(codes)))}
    at_market, at_centre = tickets[codes[0]], tickets[codes[1]]
    assert (at_market.lat, at_market.lon) == (BIM_SON_MARKET.lat, BIM_SON_MARKET.lon)
    assert at_market.location_source == "address"
    assert at_market.address == "Chợ Bỉm Sơn, Trần Phú"
    assert "gần đúng" not in found[2]
    assert at_centre.location_source == "ward_pick" and at_centre.address == "Ngõ 7 xóm Bến"
    assert "Ngõ 7 xóm Bến" in unknown[2]
    assert "vị trí gần đúng: trung tâm xã/phường" in unknown[2]
    assert tickets[codes[2]].location_source == "ward_name"
    assert "vị trí gần đúng: trung tâm xã/phường" in named[2]
    assert (tickets[codes[3]].location_source, tickets[codes[3]].address) == ("map", "cổng chợ")
