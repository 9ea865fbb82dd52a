"""Places in the chat: ward boundaries (import and routing), the area served, typed
addresses through the Nominatim stand-in, and duplicate case suggestions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import shapely
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.cli import main
from backend.db import create_engine
from backend.models import (
    AuditEvent,
    GeocodeCache,
    InboundEvent,
    OutboxMessage,
    Photo,
    Ticket,
    Ward,
    WardBoundary,
    utcnow,
)
from backend.services.deadlines import Policies
from backend.services.duplicates import DuplicateRule, nearby_cases
from backend.services.geocoding import Geocoder, GeocoderDown, match_ward_name
from backend.services.presence import Presence
from backend.services.units import WardIndex
from backend.services.workflow import Action, Actor, apply
from bot.dispatcher import Dispatcher
from bot.inbox import Inbox
from bot.tasks import cancel
from handlers.turn import Services
from tests.chat import TELEGRAM_LIKE, Chat, texts
from tests.factories import PHOTO, actor, chat_key, make_ticket
from tests.fakes.nominatim import BIM_SON_MARKET, FakeNominatim, Place

BIM_SON = (20.0740, 105.9120)
HA_NOI = (21.0285, 105.8542)

MakeChat = Callable[..., Awaitable[Chat]]


@pytest.fixture
async def make_chat(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, writer: AsyncEngine
) -> AsyncIterator[MakeChat]:
    """A chat on a dispatcher with the given services (wards loaded from the database),
    whose jobs (address look-ups) the inbox's worker does."""
    running: list[tuple[Dispatcher, Inbox, Presence]] = []
    numbers = iter(range(9100, 9200))

    async def make(served: tuple[str, ...] = (), **services: Any) -> Chat:
        async with sessions() as session:
            wards = await WardIndex.load(session, served)
        # Each chat's dispatcher is a process of its own: its inbox leases as one.
        presence = Presence(sessions, alone=False)
        await presence.beat()
        presence.start()
        d = Dispatcher(writer, Services(wards=wards, **services), {"telegram": TELEGRAM_LIKE})
        inbox = Inbox(engine, presence, d, poll_interval=0.1)
        d.on_waiting = inbox.wake
        d.start()
        inbox.start()
        running.append((d, inbox, presence))
        return Chat(d, sessions, chat_id=str(next(numbers)))

    yield make
    for d, inbox, presence in running:
        await inbox.stop()
        await d.stop()
        await presence.stop()


async def to_location(chat: Chat) -> None:
    await chat.say("/start")
    await chat.press("consent|yes")
    await chat.say("/skip")


async def thanh_hoa_geojson(sessions: async_sessionmaker[AsyncSession], path: Path) -> int:
    """Voronoi cells of Thanh Hóa's ward centroids as GeoJSON (code in "ma_xa"), with a
    feature for an unknown code and one that is not an area."""
    async with sessions() as session:
        wards = list(await session.scalars(select(Ward).where(Ward.province_code == "38")))
    sites = shapely.MultiPoint([(w.lon, w.lat) for w in wards])
    cells = shapely.get_parts(shapely.voronoi_polygons(sites, ordered=True))
    hull = sites.convex_hull.buffer(0.02)
    features = [
        {
            "type": "Feature",
            "properties": {"ma_xa": w.code, "ten": w.name},
            "geometry": shapely.geometry.mapping(shapely.intersection(cell, hull)),
        }
        for w, cell in zip(wards, cells, strict=True)
    ]
    features.append(
        {
            "type": "Feature",
            "properties": {"ma_xa": "99999"},
            "geometry": {"type": "Point", "coordinates": [105.0, 20.0]},
        }
    )
    features.append(
        {
            "type": "Feature",
            "properties": {"ma_xa": wards[0].code},
            "geometry": {"type": "LineString", "coordinates": [[105.0, 20.0], [105.1, 20.1]]},
        }
    )
    doc = json.dumps({"type": "FeatureCollection", "features": features})
    await asyncio.to_thread(path.write_text, doc, "utf-8")
    return len(wards)


async def test_boundaries_are_imported_once_and_route_without_asking(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    make_chat: MakeChat,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "wards.geojson"
    wards = await thanh_hoa_geojson(sessions, path)
    monkeypatch.setenv("HOTLINE_DATABASE_URL", database_url)

    with pytest.raises(SystemExit):
        await asyncio.to_thread(main, ["import-boundaries", str(path)])
    err = capsys.readouterr().err
    assert "no property 'code'" in err and "ma_xa" in err and "--code-property" in err

    for _ in range(2):  # idempotent
        await asyncio.to_thread(main, ["import-boundaries", str(path), "--code-property", "ma_xa"])
        out = capsys.readouterr().out
        assert f"{wards} ward boundaries imported" in out
        assert "1 features skipped, not a ward code: 99999" in out
        assert "1 features skipped, no polygon" in out
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WardBoundary)) == wards

    chat = await make_chat()
    await to_location(chat)
    await chat.send("location", location=BIM_SON)
    said = texts(await chat.replies())
    assert "Phường Bỉm Sơn, Thanh Hóa (theo ranh giới hành chính)" in said
    assert await chat.state() == "category"

    # Outside every imported polygon (Hà Nội): the nearest wards, for the reporter to pick.
    chat = await make_chat()
    await to_location(chat)
    await chat.send("location", location=HA_NOI)
    replies = await chat.replies()
    assert await chat.state() == "ward"
    assert len(replies[-1]["buttons"]) == 3


async def test_a_place_outside_the_provinces_served_gets_the_hotline_numbers(
    make_chat: MakeChat,
) -> None:
    chat = await make_chat(served=("38",), out_of_area_hotlines="0237 3852 555")
    await to_location(chat)
    await chat.send("location", location=HA_NOI)
    said = texts(await chat.replies())
    assert "Hà Nội, ngoài địa bàn" in said and "0237 3852 555" in said
    assert await chat.state() == "location"
    await chat.send("location", location=BIM_SON)
    await chat.replies()
    assert await chat.state() == "ward"


# --- geocoding --------------------------------------------------------------------------


@pytest.fixture
async def nominatim() -> AsyncIterator[FakeNominatim]:
    fake = FakeNominatim()
    await fake.start()
    yield fake
    await fake.stop()


MakeGeocoder = Callable[..., Geocoder]


@pytest.fixture
async def geocoder(
    sessions: async_sessionmaker[AsyncSession], nominatim: FakeNominatim
) -> AsyncIterator[MakeGeocoder]:
    """Geocoders on the stand-in, closed after the test."""
    made: list[Geocoder] = []

    def make(timeout: float = 5.0) -> Geocoder:
        coder = Geocoder(
            sessions,
            nominatim.url,
            user_agent="hotline-tests/1 (ops@example.vn)",
            timeout=timeout,
            interval=1.0,
        )
        made.append(coder)
        return coder

    yield make
    for coder in made:
        await coder.close()


async def test_a_typed_address_is_found_cached_and_requests_are_spaced(
    sessions: async_sessionmaker[AsyncSession],
    make_chat: MakeChat,
    nominatim: FakeNominatim,
    geocoder: MakeGeocoder,
) -> None:
    coder = geocoder()
    first, second = await make_chat(geocoder=coder), await make_chat(geocoder=coder)
    for chat in (first, second):
        await to_location(chat)

    said = texts(await first.say("Chợ Bỉm Sơn, Thanh Hóa"))
    assert "Đang tìm địa chỉ «Chợ Bỉm Sơn, Thanh Hóa»" in said
    replies = await first.wait_replies()
    assert f"Đã tìm thấy: {BIM_SON_MARKET.display_name}" in texts(replies)
    assert replies[-1]["buttons"][0][0]["data"] == "ward|14812"
    assert await first.state() == "ward"
    (request,) = nominatim.requests
    assert request.user_agent == "hotline-tests/1 (ops@example.vn)"
    assert request.query["format"] == "json" and request.query["countrycodes"] == "vn"

    # The same address again (typed differently): from the cache, no request.
    await second.say("chợ  bỉm sơn, THANH HÓA")
    assert "Đã tìm thấy" in texts(await second.wait_replies())
    assert len(nominatim.requests) == 1

    # Two new look-ups at once still go out a second apart.
    await coder.search("Trần Phú Bỉm Sơn")
    await coder.search("Nowhere at all")
    gaps = [b.at - a.at for a, b in zip(nominatim.requests, nominatim.requests[1:], strict=False)]
    assert len(gaps) == 2 and all(g >= 0.95 for g in gaps)


async def test_an_address_that_matches_nothing_asks_again(
    sessions: async_sessionmaker[AsyncSession],
    make_chat: MakeChat,
    nominatim: FakeNominatim,
    geocoder: MakeGeocoder,
) -> None:
    chat = await make_chat(geocoder=geocoder())
    await to_location(chat)
    await chat.say("số 9 ngõ không tên")
    replies = await chat.wait_replies()
    assert "Không tìm thấy địa chỉ «số 9 ngõ không tên»" in texts(replies)
    assert replies[-1]["request"] == "location"
    assert await chat.state() == "location"


async def test_a_geocoder_that_times_out_asks_for_a_pin_or_falls_back_on_ward_names(
    sessions: async_sessionmaker[AsyncSession],
    make_chat: MakeChat,
    nominatim: FakeNominatim,
    geocoder: MakeGeocoder,
) -> None:
    nominatim.delay = 2.0
    coder = geocoder(timeout=0.3)
    chat = await make_chat(geocoder=coder)
    await to_location(chat)
    await chat.say("Chợ Bỉm Sơn")
    said = texts(await chat.wait_replies())
    assert "Hiện không tra được địa chỉ" in said and "ghim" in said
    assert await chat.state() == "location"

    # "Phường X, Tỉnh Y" still works offline: tones, case and spacing ignored.
    await chat.say("phuong bim son, tinh thanh hoa")
    replies = await chat.wait_replies(timeout=10)
    assert "Phường Bỉm Sơn, Thanh Hóa" in texts(replies)
    # Only the ward was found: its centre stands for the place, and is said to be
    # approximate, here and in the summary.
    assert "Chỉ tìm thấy xã/phường" in texts(replies) and "gần đúng" in texts(replies)
    assert replies[-1]["buttons"][0][0]["data"] == "ward|14812"
    await chat.press("ward|14812")
    await chat.press("category|noise")
    await chat.replies()
    if await chat.state() == "duplicate":
        await chat.press("duplicate|new")
    summary = texts(await chat.say("Tiếng ồn máy cưa cả đêm."))
    assert "(gần đúng: trung tâm xã/phường)" in summary
    async with sessions() as session:
        # Failures are not cached: the geocoder is asked again next time.
        assert await session.scalar(select(func.count()).select_from(GeocodeCache)) == 0


async def test_ward_names_are_matched_without_tones_or_apostrophes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        wards = await WardIndex.load(session)
    found = match_ward_name(wards, "Phường Bỉm Sơn, Tỉnh Thanh Hóa")
    assert found is not None and found.code == "14812"
    assert match_ward_name(wards, "PHUONG BIM SON ,  thanh hoa") == found
    assert match_ward_name(wards, "Bỉm Sơn") == found
    assert match_ward_name(wards, "Phường Bỉm Sơn, Tỉnh Nghệ An") is None
    apostrophe = next(w for w in wards.search("hleo", limit=50) if "'" in w.name)
    assert match_ward_name(wards, apostrophe.name.replace("'", "’")) == apostrophe


async def test_a_point_is_reverse_geocoded_for_staff_once(
    nominatim: FakeNominatim, geocoder: MakeGeocoder
) -> None:
    coder = geocoder()
    here = (BIM_SON_MARKET.lat, BIM_SON_MARKET.lon)
    assert await coder.reverse(*here) == BIM_SON_MARKET.display_name
    assert await coder.reverse(*here) == BIM_SON_MARKET.display_name
    assert await coder.reverse(10.0, 106.0) is None
    assert [r.path for r in nominatim.requests] == ["/reverse", "/reverse"]


# --- duplicate suggestions ----------------------------------------------------------------


def metres_north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / 111_195, lon


async def answer(session: AsyncSession, ticket: Ticket) -> None:
    system, policies = Actor.system(), Policies.load()
    staff = await actor(session, "ward_staff", "W14812")
    for action in (Action("classify", competence="ward"), Action("assign")):
        await apply(session, ticket, action, system, policies)
    for action in (Action("claim"), Action("verify"), Action("confirm")):
        await apply(session, ticket, action, staff, policies)
    done = Action("answer", result="Đã thu gom", photos=[PHOTO])
    await apply(session, ticket, done, staff, policies)


async def test_a_second_report_nearby_joins_the_case_and_hears_its_answer(
    sessions: async_sessionmaker[AsyncSession], make_chat: MakeChat
) -> None:
    async with sessions() as session, session.begin():
        first = await make_ticket(session, lat=BIM_SON[0], lon=BIM_SON[1])
        far = await make_ticket(session, lat=metres_north(*BIM_SON, 400)[0], lon=BIM_SON[1])
        other = await make_ticket(session, category="noise")
        # Nearer still, but hidden from the public: never offered.
        hidden = await make_ticket(session, lat=metres_north(*BIM_SON, 55)[0], lon=BIM_SON[1])
        hidden.hidden_at = utcnow()
        first_code, far_code, other_code = first.code, far.code, other.code
        await session.flush()
        first_photo = await session.scalar(select(Photo).where(Photo.ticket_id == first.id))
        assert first_photo is not None
        hidden_code, first_photo_id = hidden.code, first_photo.id
    chat = await make_chat()
    await to_location(chat)
    await chat.send("location", location=metres_north(*BIM_SON, 60))
    await chat.press("ward|14812")
    replies = await chat.press("category|dumping")
    assert await chat.state() == "duplicate"
    # Its photo not published: the case is offered in words only, its distance to the
    # nearest 100 m (no finer than the public may know its place).
    [ask] = replies
    assert "photo_sha256" not in ask or ask["photo_sha256"] is None
    assert first_code in ask["text"] and "trong khoảng 100 m" in ask["text"]
    assert hidden_code not in ask["text"]
    assert far_code not in ask["text"] and other_code not in ask["text"]
    buttons = [b["data"] for row in ask["buttons"] for b in row]
    assert buttons == [f"duplicate|{first_code}", "duplicate|new"]
    # Published, it is shown with the offer.
    async with sessions() as session, session.begin():
        published = await session.get(Photo, first_photo_id)
        assert published is not None
        published.public = True
    await chat.say("/cancel")
    await to_location(chat)
    await chat.send("location", location=metres_north(*BIM_SON, 60))
    await chat.press("ward|14812")
    (thumb, ask) = await chat.press("category|dumping")
    assert thumb["photo_sha256"] == "b" * 64 and thumb["thumbnail"] is True
    assert first_code in thumb["text"] and "trong khoảng 100 m" in thumb["text"]
    assert "Đã tiếp nhận" in thumb["text"] or "Tiếp nhận" in thumb["text"]

    await chat.press(f"duplicate|{first_code}")
    said = texts(await chat.say("Vẫn còn, lại đổ thêm hôm nay"))
    assert await chat.state() == "summary"
    assert f"Gộp vào vụ: {first_code}" in said
    said = texts(await chat.press("summary|anonymous"))
    assert f"gộp vào vụ {first_code}" in said

    async with sessions() as session, session.begin():
        case = await session.scalar(select(Ticket).where(Ticket.code == first_code))
        joined = await session.scalar(select(Ticket).order_by(Ticket.id.desc()).limit(1))
        assert case is not None and joined is not None
        assert (joined.state, joined.case_id, joined.nature) == ("merged", case.id, case.nature)
        merge = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.ticket_id == joined.id, AuditEvent.action == "merge"
            )
        )
        assert merge is not None and merge.actor == "system"
        await answer(session, case)
    async with sessions() as session:
        told = await session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.chat_key == chat_key(chat.channel, chat.chat_id)
            )
        )
        assert any(m.payload.get("key") == "notify.answered" for m in told)


async def test_what_is_not_suggested_and_a_different_problem_goes_on(
    sessions: async_sessionmaker[AsyncSession], make_chat: MakeChat
) -> None:
    now = utcnow()
    async with sessions() as session, session.begin():
        old = await make_ticket(session, now=now - timedelta(days=31))
        closed = await make_ticket(session)
        await answer(session, closed)
        await apply(session, closed, Action("close"), Actor.system(), Policies.load())
        await make_ticket(session, lat=BIM_SON[0] + 0.002, lon=BIM_SON[1])  # ~220 m away
        rule = DuplicateRule()
        assert await nearby_cases(session, "dumping", *BIM_SON, now, rule) == []
        assert old.code and closed.code
        # A wider radius for the category takes in the ticket 220 m away, not the rest.
        wide = DuplicateRule(per_category={"dumping": 250.0})
        found = await nearby_cases(session, "dumping", *BIM_SON, now, wide)
        assert [round(f.distance_m, -1) for f in found] == [220.0]

    chat = await make_chat()
    await to_location(chat)
    await chat.send("location", location=BIM_SON)
    await chat.press("ward|14812")
    await chat.press("category|dumping")
    assert await chat.state() == "description"

    chat = await make_chat(duplicates=DuplicateRule(per_category={"dumping": 250.0}))
    await to_location(chat)
    await chat.send("location", location=BIM_SON)
    await chat.press("ward|14812")
    await chat.press("category|dumping")
    assert await chat.state() == "duplicate"
    await chat.press("duplicate|new")
    assert await chat.state() == "description"


async def test_the_ticket_page_does_not_wait_for_a_slow_geocoder_but_the_answer_is_kept(
    nominatim: FakeNominatim, geocoder: MakeGeocoder
) -> None:
    nominatim.delay = 0.5
    coder = geocoder()
    here = (BIM_SON_MARKET.lat, BIM_SON_MARKET.lon)
    assert await coder.reverse_within(*here, seconds=0.05) is None
    await asyncio.sleep(0.8)
    assert await coder.reverse_within(*here, seconds=0.05) == BIM_SON_MARKET.display_name
    assert len(nominatim.requests) == 1


async def test_an_address_look_up_outlives_the_process_that_began_it(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    writer: AsyncEngine,
    nominatim: FakeNominatim,
    geocoder: MakeGeocoder,
) -> None:
    """Process A says "looking up…" and dies in the middle of the look-up; process B
    does the look-up, and the resident gets the answer once."""
    async with sessions() as session:
        wards = await WardIndex.load(session)

    def process(coder: Geocoder) -> tuple[Presence, Dispatcher, Inbox]:
        presence = Presence(sessions, beat=0.2, dead_after=1.0, alone=False)
        d = Dispatcher(writer, Services(wards=wards, geocoder=coder), {"telegram": TELEGRAM_LIKE})
        inbox = Inbox(engine, presence, d, poll_interval=0.1)
        d.on_waiting = inbox.wake
        return presence, d, inbox

    presence_a, dispatcher_a, inbox_a = process(geocoder())
    await presence_a.beat()
    presence_a.start()
    dispatcher_a.start()
    inbox_a.start()
    chat = Chat(dispatcher_a, sessions, chat_id="9300")
    await to_location(chat)
    nominatim.delay = 3.0  # A's look-up is under way when it dies
    said = texts(await chat.say("Chợ Bỉm Sơn, Thanh Hóa"))
    assert "Đang tìm địa chỉ «Chợ Bỉm Sơn, Thanh Hóa»" in said
    for _ in range(250):
        if nominatim.requests:
            break
        await asyncio.sleep(0.02)
    assert nominatim.requests, "A never asked the geocoder"
    # kill -9: no more beats, the look-up cut off, nothing handed back.
    await cancel(presence_a._task)
    await cancel(inbox_a._task)
    for task in list(inbox_a._chats):
        await cancel(task)
    await dispatcher_a.stop()
    nominatim.delay = 0.0

    presence_b, dispatcher_b, inbox_b = process(geocoder())
    await presence_b.beat()
    presence_b.start()
    dispatcher_b.start()
    inbox_b.start()
    try:
        replies = await chat.wait_replies(timeout=10)
        assert f"Đã tìm thấy: {BIM_SON_MARKET.display_name}" in texts(replies)
        assert await chat.state() == "ward"
        async with sessions() as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(InboundEvent)
                .where(InboundEvent.handled_at.is_(None))
            )
        assert waiting == 0
        await asyncio.sleep(0.5)
        assert await chat.replies() == []  # answered once
    finally:
        await inbox_b.stop()
        await dispatcher_b.stop()
        await presence_b.stop()


async def test_two_processes_keep_one_pace_and_one_pause_with_the_geocoder(
    database_url: str, nominatim: FakeNominatim
) -> None:
    """Two processes' geocoders (each its own engine) ask a second apart, all told, and
    after one of them meets a failure neither asks until the pause ends."""
    engines = [create_engine(database_url) for _ in range(2)]
    coders = [
        Geocoder(
            async_sessionmaker(e, expire_on_commit=False),
            nominatim.url,
            user_agent="hotline-tests/1 (ops@example.vn)",
            timeout=0.3,
            interval=1.0,
        )
        for e in engines
    ]
    try:
        queries = [f"Đường số {n}, Bỉm Sơn" for n in range(4)]
        await asyncio.gather(*(coders[n % 2].search(q) for n, q in enumerate(queries)))
        times = sorted(r.at for r in nominatim.requests)
        assert len(times) == 4
        assert all(b - a >= 0.95 for a, b in pairwise(times)), times

        nominatim.delay = 1.0  # longer than the timeout: the first process meets a failure
        with pytest.raises(GeocoderDown):
            await coders[0].search("Đường số 10, Bỉm Sơn")
        asked = len(nominatim.requests)
        with pytest.raises(GeocoderDown):
            await coders[1].search("Đường số 11, Bỉm Sơn")
        assert len(nominatim.requests) == asked  # the other process did not ask
    finally:
        for coder in coders:
            await coder.close()
        for e in engines:
            await e.dispose()


async def test_without_boundaries_the_wards_of_the_nearest_centres_province_come_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A point in Thanh Hóa whose second-nearest ward centre is across the border in
    Ninh Bình: Thanh Hóa's wards are offered first."""
    async with sessions() as session:
        wards = await WardIndex.load(session)
    point = (20.0795, 105.912)
    plain = [n.ward.province_code for n in wards.nearest(*point, k=3)]
    assert plain[0] == "38" and "37" in plain, plain  # the trap is there
    offered = [n.ward.province_code for n in wards.place(*point).nearby]
    assert offered == ["38", "38", "38"]


async def test_the_maps_name_for_a_pin_puts_its_ward_first(
    sessions: async_sessionmaker[AsyncSession],
    make_chat: MakeChat,
    nominatim: FakeNominatim,
    geocoder: MakeGeocoder,
) -> None:
    """No boundaries, a geocoder: the ward the reverse look-up names (matched by name in
    the candidates' provinces) is offered first, as the map's, even when another ward's
    centre is nearer the pin."""
    async with sessions() as session:
        wards = await WardIndex.load(session)
    bim_son = wards.get("14812")
    assert bim_son is not None
    other = next(n.ward for n in wards.nearest(bim_son.lat, bim_son.lon, k=3)[1:])
    # A pin a third of the way from the other ward's centre: nearer to it.
    pin = (
        other.lat + (bim_son.lat - other.lat) * 0.35,
        other.lon + (bim_son.lon - other.lon) * 0.35,
    )
    assert wards.nearest(*pin, k=1)[0].ward.code == other.code
    nominatim.places.append(
        Place(
            names=("le loi",),
            lat=pin[0],
            lon=pin[1],
            display_name="Đường Lê Lợi, Phường Bỉm Sơn, Tỉnh Thanh Hóa, Việt Nam",
            address={"suburb": "Phường Bỉm Sơn", "state": "Tỉnh Thanh Hóa", "country_code": "vn"},
            osm_id=777,
        )
    )
    chat = await make_chat(geocoder=geocoder())
    await to_location(chat)
    await chat.send("location", location=pin)
    replies = await chat.wait_replies()
    if len(replies) == 1:  # the ward question may come a moment after the place
        replies += await chat.wait_replies()
    assert "Đã nhận vị trí" in replies[0]["text"]
    assert "Theo bản đồ, hiện trường thuộc Phường Bỉm Sơn, Thanh Hóa" in replies[1]["text"]
    first = replies[1]["buttons"][0][0]
    assert first == {"label": "📍 Phường Bỉm Sơn, Thanh Hóa (theo bản đồ)", "data": "ward|14812"}
    assert [r.path for r in nominatim.requests] == ["/reverse"]

    # Where the map names no ward: the nearest centres, as before.
    plain = await make_chat(geocoder=geocoder())
    await to_location(plain)
    await plain.send("location", location=HA_NOI)
    replies = await plain.wait_replies()
    assert "Theo bản đồ" not in replies[-1]["text"]
    assert replies[-1]["buttons"][0][0]["data"].startswith("ward|")


async def test_a_typed_ward_far_from_the_pin_is_checked_with_the_reporter(
    sessions: async_sessionmaker[AsyncSession], make_chat: MakeChat
) -> None:
    """A pin in Hà Nội and the ward typed as "Bỉm Sơn" (Thanh Hóa): the reporter is asked
    which is right, and each answer is kept as given."""
    chat = await make_chat()
    await to_location(chat)
    await chat.send("location", location=HA_NOI)
    await chat.replies()
    replies = await chat.say("Bỉm Sơn")
    assert await chat.state() == "ward_check"
    asked = replies[-1]
    assert "Phường Bỉm Sơn, Thanh Hóa cách vị trí bạn gửi khoảng" in asked["text"]
    assert [b["data"] for row in asked["buttons"] for b in row] == [
        "ward_check|pin",
        "ward_check|ward",
    ]
    # The pin is right: the wards near it again, none of Thanh Hóa.
    replies = await chat.press("ward_check|pin")
    assert await chat.state() == "ward"
    offered = [b["label"] for row in replies[-1]["buttons"] for b in row]
    assert offered and not any("Thanh Hóa" in label for label in offered)

    # The typed ward is right: its centre stands for the place, marked approximate.
    await chat.say("Bỉm Sơn")
    replies = await chat.press("ward_check|ward")
    assert "trung tâm Phường Bỉm Sơn, Thanh Hóa (gần đúng)" in texts(replies)
    assert await chat.state() == "category"
    await chat.press("category|noise")
    await chat.replies()
    if await chat.state() == "duplicate":
        await chat.press("duplicate|new")
    summary = texts(await chat.say("Tiếng ồn máy cưa cả đêm."))
    assert "Phường Bỉm Sơn, Thanh Hóa" in summary and "(gần đúng" in summary
    await chat.press("summary|anonymous")
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket).order_by(Ticket.id.desc()))).first()
    assert ticket is not None and ticket.ward_code == "14812"
    assert ticket.location_source == "ward_name"


async def test_a_ward_offered_for_the_pin_is_taken_without_a_check(
    make_chat: MakeChat,
) -> None:
    chat = await make_chat()
    await to_location(chat)
    await chat.send("location", location=BIM_SON)
    replies = await chat.replies()
    first = replies[-1]["buttons"][0][0]["data"]
    await chat.press(first)
    assert await chat.state() == "category"


async def test_a_street_named_after_another_ward_does_not_name_the_ward(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        wards = await WardIndex.load(session)
    found = wards.named_in("12, Quang Trung, Phường Bỉm Sơn, Thanh Hóa", {"38"})
    assert found is not None and found.code == "14812"
    found = wards.named_in("Hạc Thành, Phường Bỉm Sơn", {"38"})
    assert found is not None and found.code == "14812"
    assert wards.named_in("Đường Lê Lợi, Tỉnh Thanh Hóa, Việt Nam", {"38"}) is None
