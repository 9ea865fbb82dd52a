"""Nothing about a reporter, and neither the report's words nor the polluter it names,
reaches the public map, its list or its JSON: every answer is searched for them."""

from __future__ import annotations

import json

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import Reporter
from backend.services.reporters import set_phone
from tests.e2e.conftest import running
from tests.e2e.test_public_map import BIM_SON, COUNTRY, add_case, map_settings  # noqa: F401
from tests.factories import make_ticket

CHAT_ID = "778899001122"
PHONE = "+84912345678"
NAME_IN_TEXT = "Nguyễn Văn Bảo"
POLLUTER = "Công ty Hóa chất Trần Thị Mai"


async def test_no_reporter_description_or_polluter_on_the_public_map(
    map_settings: Settings,  # noqa: F811
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id=CHAT_ID, lat=20.0745, lon=105.9125)
        assert ticket.reporter_id is not None
        await set_phone(s, ticket.reporter_id, PHONE)
        ticket.description = f"Ông {NAME_IN_TEXT} đổ rác ra kênh, gọi {PHONE}"
        ticket.polluter = POLLUTER
        ticket.address = f"Nhà {NAME_IN_TEXT}, ngõ 5"
        await add_case(  # answered, by the same reporter
            s,
            state="answered",
            answered_days_ago=1,
            category="noise",
            description=f"{POLLUTER} xả khói",
            polluter=POLLUTER,
            reporter_id=ticket.reporter_id,
        )
        reporter = await s.get(Reporter, ticket.reporter_id)
        assert reporter is not None
        code, pseudonym = ticket.code, reporter.pseudonym
    secrets = (CHAT_ID, PHONE, PHONE.removeprefix("+84"), pseudonym, NAME_IN_TEXT, POLLUTER)
    paths = [
        "/map",
        "/map?lang=en",
        f"/map?ward={BIM_SON}",
        f"/map?ward={BIM_SON}&category=dumping&status=open&lang=en",
        f"/map/data?bbox={COUNTRY}&zoom=6",
        f"/map/data?bbox={COUNTRY}&zoom=6&status=answered&lang=en",
        f"/map/data?bbox={COUNTRY}&zoom=6&page_size=100&near=20.07,105.91",
        "/map/data?bbox=105.90,20.06,105.93,20.09&zoom=18",
        "/map/data?bbox=105.90,20.06,105.93,20.09&zoom=12&ward=14812",
        f"/map/wards/{BIM_SON}",
        "/map/wards?province=38",
    ]
    base = map_settings.public_url or ""
    seen_code = 0
    async with running(map_settings), aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(base + path) as r:
                assert r.status == 200, path
                raw = await r.text()
            # JSON escapes non-ASCII text: search the decoded form too.
            texts = [raw]
            if r.content_type == "application/json":
                texts.append(json.dumps(json.loads(raw), ensure_ascii=False))
            for text in texts:
                for secret in secrets:
                    assert secret not in text, (path, secret)
                assert "Bãi rác tự phát" not in text  # the factory's description
                assert "xả khói" not in text and "đổ rác ra kênh" not in text
            seen_code += code in raw
    assert seen_code >= 8  # the case itself is on the map, the list and the page
