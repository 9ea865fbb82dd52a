"""Limits on abuse in the chats, through the real dispatcher and database: a reporter's
allowance of reports and additions per channel (an hour's and a day's), and muting.
Time is the dialogue's clock (Services.now), moved by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.models import (
    Conversation,
    OutboxMessage,
    Photo,
    RateCount,
    Reporter,
    ReporterIdentity,
    Ticket,
)
from backend.services.abuse import ReporterLimits, counter, lift, mute, takes_photo
from backend.services.limits import DAY, HOUR, Limit, take_all
from backend.services.units import WardIndex
from bot.dispatcher import Dispatcher
from handlers.core import DRAFT_PHOTO_STEPS
from handlers.events import MediaRef
from tests.chat import TELEGRAM_LIKE, TEXT_ONLY, Chat, texts
from tests.factories import chat_key

# 09:10 in Vietnam.
START = datetime(2026, 12, 2, 2, 10, tzinfo=UTC)
LIMITS = ReporterLimits(
    reports=(Limit(2, HOUR), Limit(3, DAY)), additions=(Limit(1, HOUR), Limit(5, DAY))
)
LIMIT_TEXT = "Bạn đã gửi đủ số phản ánh cho phép"
NEUTRAL = "Chúng tôi đã nhận được tin nhắn của bạn."


@dataclass
class Clock:
    at: datetime = START
    moves: list[timedelta] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.at

    def forward(self, delta: timedelta) -> None:
        self.at += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def dispatcher(
    sessions: async_sessionmaker[AsyncSession], writer: AsyncEngine, clock: Clock
) -> AsyncIterator[Dispatcher]:
    from handlers.turn import Services

    async with sessions() as session:
        wards = await WardIndex.load(session)
    caps = {"telegram": TELEGRAM_LIKE, "zalo_bot": TEXT_ONLY}
    d = Dispatcher(writer, Services(wards=wards, now=clock, limits=LIMITS), caps)
    d.start()
    yield d
    await d.stop()


@pytest.fixture
def chat(dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]) -> Chat:
    return Chat(dispatcher, sessions, chat_id="9101")


def photo(n: int) -> MediaRef:
    return MediaRef(sha256=f"{n:x}".rjust(64, "b"), content_type="image/jpeg", width=64,
                    height=48, size_bytes=900)  # fmt: skip


_photos = iter(range(1, 10_000))


async def to_summary(chat: Chat) -> None:
    """/start to the summary of a recurring report with one photo."""
    replies = await chat.say("/start")
    assert LIMIT_TEXT not in texts(replies), texts(replies)
    if await chat.state() == "consent":
        await chat.press("consent|yes")
    assert await chat.state() == "photos"
    await chat.send("photo", media=photo(next(_photos)))
    await chat.press("photos|done")
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    await chat.press("category|dumping")
    if await chat.state() == "duplicate":
        await chat.press("duplicate|new")
    assert await chat.state() == "description"
    await chat.say("Rác thải đổ trộm bên đường, bốc mùi hôi thối")
    await chat.press("summary|details")
    await chat.press("details|recurring")
    assert await chat.state() == "summary"
    await chat.replies()


async def file_report(chat: Chat) -> str:
    """A report filed anonymously; its code."""
    await to_summary(chat)
    replies = await chat.press("summary|anonymous")
    assert await chat.state() == "idle"
    assert "Mã" in texts(replies) or "mã" in texts(replies), texts(replies)
    async with chat.sessions() as s:
        code = await s.scalar(select(Ticket.code).order_by(Ticket.id.desc()).limit(1))
    assert code is not None
    return code


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as s:
        tickets = await s.scalar(select(func.count()).select_from(Ticket))
        photos = await s.scalar(select(func.count()).select_from(Photo))
    return int(tickets or 0), int(photos or 0)


async def draft(chat: Chat) -> dict[str, object]:
    async with chat.sessions() as s:
        conv = await s.scalar(
            select(Conversation).where(
                Conversation.channel == chat.channel,
                Conversation.chat_key == chat_key(chat.channel, chat.chat_id),
            )
        )
    assert conv is not None
    return dict(conv.data)


async def reporter_of(chat: Chat) -> int:
    async with chat.sessions() as s:
        conv = await s.scalar(
            select(Conversation).where(
                Conversation.channel == chat.channel,
                Conversation.chat_key == chat_key(chat.channel, chat.chat_id),
            )
        )
    assert conv is not None and conv.reporter_id is not None
    return conv.reporter_id


async def test_an_hours_reports_then_a_polite_refusal_and_nothing_stored(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    await file_report(chat)
    await file_report(chat)
    before = await counts(sessions)
    assert before[0] == 2
    replies = await chat.say("/start")
    text = texts(replies)
    # When they can send again (the next hour, 10:00 in Vietnam), and the hotline.
    assert LIMIT_TEXT in text and "10:00 02/12/2026" in text
    assert "tối đa 2 phản ánh mỗi giờ và 3 phản ánh mỗi ngày" in text
    assert "đường dây nóng" in text
    assert await chat.state() == "idle" and await draft(chat) == {}
    # A photo sent to begin a report: offered as an addition to an open one, or a new
    # report, which is refused likewise; the photo is kept nowhere.
    await chat.send("photo", media=photo(9000))
    await chat.replies()
    assert await chat.state() == "addition"
    replies = await chat.press("addition|new")
    assert LIMIT_TEXT in texts(replies)
    assert await chat.state() == "idle" and await draft(chat) == {}
    assert await counts(sessions) == before
    # English too.
    await chat.say("/lang en")
    replies = await chat.say("/start")
    assert "You can send a new report from 10:00 02/12/2026" in texts(replies)
    # The next hour allows again: refused attempts did not use up the day's count.
    clock.forward(timedelta(minutes=50))
    await chat.say("/lang vi")
    await file_report(chat)
    assert (await counts(sessions))[0] == 3


async def test_the_days_limit_says_midnight(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    await file_report(chat)
    await file_report(chat)
    clock.forward(timedelta(hours=1))
    await file_report(chat)
    clock.forward(timedelta(hours=1))
    replies = await chat.say("/start")
    assert LIMIT_TEXT in texts(replies) and "00:00 03/12/2026" in texts(replies)
    assert (await counts(sessions))[0] == 3
    # A new day in Vietnam (00:00 local is 17:00 UTC).
    clock.at = datetime(2026, 12, 2, 17, 0, 1, tzinfo=UTC)
    await file_report(chat)
    assert (await counts(sessions))[0] == 4


async def test_each_channel_counts_apart(
    chat: Chat, dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await file_report(chat)
    await file_report(chat)
    assert LIMIT_TEXT in texts(await chat.say("/start"))
    # The same person's number on Zalo is another channel, with its own allowance.
    zalo = Chat(dispatcher, sessions, chat_id="9101", channel="zalo_bot")
    await file_report(zalo)
    await file_report(zalo)
    assert LIMIT_TEXT in texts(await zalo.say("/start"))
    assert (await counts(sessions))[0] == 4
    async with sessions() as s:
        names = set(await s.scalars(select(RateCount.name)))
    assert {n.split(":")[1] for n in names} == {"telegram", "zalo_bot"}


async def test_over_the_limit_at_sending_the_draft_is_dropped_and_said(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    await to_summary(chat)
    name = counter("report", "telegram", chat_key(chat.channel, chat.chat_id))
    # Meanwhile the count filled up (the limit lowered, another process's report).
    async with sessions() as s, s.begin():
        for _ in range(2):
            assert await take_all(
                s, name, list(LIMITS.reports), clock().timestamp(),
            )  # fmt: skip
    replies = await chat.press("summary|anonymous")
    text = texts(replies)
    assert "Phản ánh này chưa được gửi và bản nháp đã được xoá" in text
    assert "10:00 02/12/2026" in text
    assert await counts(sessions) == (0, 0)
    assert await chat.state() == "idle" and await draft(chat) == {}
    # The refused one was given back: the hour's count is the limit, the day's 2 of 3.
    async with sessions() as s:
        rows = dict(
            (name, n) for name, n in (await s.execute(select(RateCount.name, RateCount.count)))
        )
    assert sorted(rows.values()) == [2, 2]
    clock.forward(timedelta(hours=1))
    await file_report(chat)
    assert LIMIT_TEXT in texts(await chat.say("/start"))
    assert "00:00 03/12/2026" in texts(await chat.say("/start"))


async def test_additions_have_their_own_limit(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    code = await file_report(chat)
    await chat.send("photo", media=photo(7001))
    await chat.replies()
    replies = await chat.press(f"addition|{code}")
    assert "Đã bổ sung" in texts(replies)
    _, photos = await counts(sessions)
    # Over the allowance of additions: words are not offered as one (said so, with when
    # they can add again), and a photo begins a new report instead: additions do not
    # use up reports.
    replies = await chat.say("Bãi rác vẫn còn nguyên, chưa ai dọn.")
    assert "Phần bổ sung này chưa được thêm" in texts(replies)
    assert "10:00 02/12/2026" in texts(replies)
    assert await chat.state() == "idle"
    await chat.send("photo", media=photo(7002))
    await chat.replies()
    assert await chat.state() == "photos"
    assert (await counts(sessions))[1] == photos
    await chat.say("/cancel")
    await file_report(chat)
    clock.forward(timedelta(hours=1))
    await chat.send("photo", media=photo(7003))
    await chat.replies()
    assert "Đã bổ sung" in texts(await chat.press(f"addition|{code}"))


async def test_a_muted_reporter_gets_a_neutral_answer_and_nothing_is_stored(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    code = await file_report(chat)
    reporter = await reporter_of(chat)
    await to_summary(chat)
    async with sessions() as s, s.begin():
        await mute(s, reporter, 1, "spam, 40 reports of one place", None, clock())
    before = await counts(sessions)
    # The draft in progress is dropped; nothing is sent, and the answer claims nothing.
    replies = await chat.press("summary|anonymous")
    assert texts(replies).startswith(NEUTRAL)
    assert "Mã" not in texts(replies) and "tắt" not in texts(replies)
    assert await chat.state() == "idle" and await draft(chat) == {}

    async def photo_sent() -> list[dict[str, object]]:
        await chat.send("photo", media=photo(8001))
        return await chat.replies()

    async def place_sent() -> list[dict[str, object]]:
        await chat.send("location", location=(20.0740, 105.9120))
        return await chat.replies()

    for action in (
        lambda: chat.say("/start"),
        lambda: chat.say("Bãi rác lại bốc cháy rồi, khói đen khắp nơi"),
        photo_sent,
        place_sent,
        lambda: chat.say(f"/reopen {code}"),
        lambda: chat.press(f"t|{code}|reopen"),
        lambda: chat.say("/cancel"),
    ):
        replies = await action()
        assert [r["text"] for r in replies] == [NEUTRAL + " Nếu việc khẩn cấp, xin gọi đường"
                                                " dây nóng về môi trường của tỉnh."]  # fmt: skip
        assert await chat.state() == "idle"
    assert await counts(sessions) == before
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(RateCount)) == 2  # the 1st's
    # The mute ends by itself a day later.
    clock.forward(timedelta(days=1, seconds=1))
    await file_report(chat)


async def test_a_muted_reporter_keeps_their_rights(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    code = await file_report(chat)
    reporter = await reporter_of(chat)
    async with sessions() as s, s.begin():
        await mute(s, reporter, 30, "abusive words to the operators", None, clock())
    assert code in texts(await chat.say(f"/status {code}"))
    assert code in texts(await chat.say("/my"))
    mydata = texts(await chat.say("/mydata"))
    async with sessions() as s:
        pseudonym = await s.scalar(select(Reporter.pseudonym).where(Reporter.id == reporter))
    assert f"{pseudonym}" in mydata
    await chat.press("rights|withdraw")
    assert "rút" in texts(await chat.press("withdraw|confirm")).lower()
    await chat.say("/forgetme")
    await chat.press("forget|confirm")
    async with sessions() as s:
        erased = await s.scalar(select(Reporter.erased_at).where(Reporter.id == reporter))
        # Sent once, its chat no longer kept: the last reply written.
        last = await s.scalar(select(OutboxMessage.payload).order_by(OutboxMessage.id.desc()))
    assert erased is not None
    assert last is not None and "Đã xoá danh tính của bạn" in last["text"]


async def test_lifting_a_mute_lets_them_report_again(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    await chat.say("/start")
    await chat.press("consent|yes")
    reporter = await reporter_of(chat)
    async with sessions() as s, s.begin():
        await mute(s, reporter, 7, "a week to cool down", None, clock())
    assert texts(await chat.say("/start")).startswith(NEUTRAL)
    clock.forward(timedelta(days=6))
    assert texts(await chat.say("/start")).startswith(NEUTRAL)
    async with sessions() as s, s.begin():
        assert await lift(s, reporter, clock()) == 1
        assert await lift(s, reporter, clock()) == 0
    await file_report(chat)


async def test_a_mute_reaches_a_draft_in_progress_within_the_refresh_and_nothing_is_sent(
    chat: Chat, dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    await to_summary(chat)
    await chat.press("summary|edit")
    await chat.press("edit|description")
    assert await chat.state() == "description"
    reporter = await reporter_of(chat)
    async with sessions() as s, s.begin():
        await mute(s, reporter, 1, "spam, 40 reports of one place", None, clock())
    # Words typed into the draft go by what this process knew a moment ago…
    replies = await chat.say("Rác thải đổ trộm bên đường, bốc mùi hôi thối, mô tả mới")
    assert NEUTRAL not in texts(replies)
    assert await chat.state() == "summary"
    # …but sending asks the database: nothing is filed, the draft is dropped.
    replies = await chat.press("summary|anonymous")
    assert texts(replies).startswith(NEUTRAL)
    assert await counts(sessions) == (0, 0) and await draft(chat) == {}
    # Once the process has looked again, a draft's every message gets the answer.
    await chat.say("/start")
    dispatcher._services.muted.refresh = 0
    async with sessions() as s, s.begin():
        await lift(s, reporter, clock())
    await to_summary(chat)
    async with sessions() as s, s.begin():
        await mute(s, reporter, 1, "spam, 40 reports of one place", None, clock())
    replies = await chat.say("Thêm một mô tả nữa cho bản nháp này")
    assert texts(replies).startswith(NEUTRAL) and await draft(chat) == {}


async def test_an_addition_to_a_report_closed_meanwhile_is_not_counted(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await file_report(chat)
    await chat.send("photo", media=photo(7101))
    await chat.replies()
    async with sessions() as s, s.begin():
        await s.execute(update(Ticket).where(Ticket.code == code).values(state="closed"))
    replies = await chat.press(f"addition|{code}")
    assert code in texts(replies) and "Đã bổ sung" not in texts(replies)
    async with sessions() as s:
        used = dict(
            (await s.execute(select(RateCount.name, RateCount.count).where(
                RateCount.name.like("addition:%")
            ))).all()
        )  # fmt: skip
    assert set(used.values()) == {0}, used


async def reporter_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        found = await s.scalar(
            select(func.count())
            .select_from(ReporterIdentity)
            .where(ReporterIdentity.chat_id.is_not(None))
        )
    return int(found or 0)


async def test_forgetting_oneself_does_not_refill_the_allowance(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """/forgetme makes the next contact a new reporter; the count is the chat's, so the
    hour's limit still holds."""
    await file_report(chat)
    await file_report(chat)
    await chat.say("/forgetme")
    await chat.press("forget|confirm")
    assert await reporter_count(sessions) == 0
    replies = await chat.say("/start")
    assert LIMIT_TEXT in texts(replies)
    assert await draft(chat) == {}


async def test_a_photo_is_fetched_only_where_the_dialogue_would_take_it(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    """takes_photo, asked before a chat's photo is downloaded, answers as the dialogue
    would take the photo: at a step that asks for photos, an addition's within its
    allowance, a new report's within its allowance; never at another step of a draft,
    never a muted reporter's."""

    async def taken() -> bool:
        async with sessions() as s:
            return await takes_photo(
                s, chat.channel, chat.chat_id, LIMITS, clock(), DRAFT_PHOTO_STEPS
            )

    assert await taken()  # a new contact: the photo begins a report
    code = await file_report(chat)
    await chat.say("/start")
    assert await chat.state() == "photos" and await taken()  # the step that asks for them
    await chat.say("/skip")
    assert await chat.state() == "location" and not await taken()  # a step that does not
    await chat.say("/cancel")
    await to_summary(chat)
    assert not await taken()
    await chat.say("/cancel")
    await file_report(chat)  # the hour's two reports
    assert await chat.state() == "idle"
    assert await taken()  # reports used up, but one may be added to
    await chat.send("photo", media=photo(7101))
    await chat.replies()
    assert await chat.state() == "addition"
    assert await taken()  # more photos for the addition
    await chat.press(f"addition|{code}")
    assert not await taken()  # neither an addition nor a report is allowed now
    clock.forward(timedelta(hours=1))
    assert await taken()
    async with sessions() as s, s.begin():
        await mute(s, await reporter_of(chat), 1, "spam", None, clock())
    assert not await taken()


async def test_a_photo_not_taken_is_answered_with_the_reason_not_send_it_again(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    """A photo the gate refused reaches the dialogue as "not_taken": a reporter muted a
    moment ago (which this process's view of mutes may not know yet) gets the neutral
    answer, and one over the allowance of additions is told so; neither is asked to
    send it again, which would not help."""
    not_taken = {"media": None, "media_error": "not_taken"}
    code = await file_report(chat)
    await chat.say("/start")
    await chat.say("Rác thải đổ trộm bên đường")  # at the photos step: the view is loaded
    async with sessions() as s, s.begin():
        await mute(s, await reporter_of(chat), 1, "spam", None, clock())
    await chat.send("photo", **not_taken)
    assert texts(await chat.replies()).startswith(NEUTRAL)
    assert await chat.state() == "idle" and await draft(chat) == {}
    async with sessions() as s, s.begin():
        await lift(s, await reporter_of(chat), clock())

    clock.forward(timedelta(minutes=1))
    await chat.send("photo", media=photo(7201))
    await chat.replies()
    assert await chat.state() == "addition"
    name = counter("addition", "telegram", chat_key(chat.channel, chat.chat_id))
    async with sessions() as s, s.begin():
        await take_all(s, name, list(LIMITS.additions), clock().timestamp())
    await chat.send("photo", **not_taken)
    replies = texts(await chat.replies())
    assert "Phần bổ sung này chưa được thêm" in replies and code not in replies
    assert await chat.state() == "idle"
