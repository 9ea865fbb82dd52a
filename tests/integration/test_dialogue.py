"""The dialogue as scripts of (resident says → bot says), through the real dispatcher and
database, with no network: replies are read back from the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.models import AuditEvent, Consent, OutboxMessage, Photo, Ticket, Unit
from backend.services.deadlines import Policies
from backend.services.photos import ACCEPTED_FORMATS
from backend.services.reporters import CONSENT_TEXT_VERSION, record_consent
from backend.services.units import WardIndex
from backend.services.workflow import Action, WorkflowError, apply
from bot.dispatcher import Dispatcher
from handlers.events import MediaRef
from handlers.i18n import translate
from handlers.turn import Services
from tests.chat import TELEGRAM_LIKE, TEXT_ONLY, Chat, texts
from tests.factories import PHOTO as FACTORY_PHOTO
from tests.factories import actor, make_ticket, make_user


@pytest.fixture
async def dispatcher(
    sessions: async_sessionmaker[AsyncSession], writer: AsyncEngine
) -> AsyncIterator[Dispatcher]:
    async with sessions() as session:
        wards = await WardIndex.load(session)
    caps = {"telegram": TELEGRAM_LIKE, "textonly": TEXT_ONLY}
    d = Dispatcher(writer, Services(wards=wards), caps)
    d.start()
    yield d
    await d.stop()


@pytest.fixture
def chat(dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]) -> Chat:
    return Chat(dispatcher, sessions, chat_id="9001")


PHOTO = MediaRef(sha256="a" * 64, content_type="image/jpeg", width=64, height=48, size_bytes=900)


async def to_photos(chat: Chat) -> None:
    await chat.say("/start")
    await chat.press("consent|yes")


async def submit(chat: Chat, description: str) -> None:
    """From the description step to a recurring report, sent anonymously."""
    await chat.say(description)
    await chat.press("summary|details")
    await chat.press("details|recurring")
    await chat.press("summary|anonymous")


async def to_description(chat: Chat) -> None:
    await to_photos(chat)
    await chat.send("photo", media=PHOTO)
    await chat.press("photos|done")
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    await chat.press("category|dumping")
    await chat.replies()
    if await chat.state() == "duplicate":
        # An earlier report of this test at the same spot is offered: this one is new.
        await chat.press("duplicate|new")
        await chat.replies()
    assert await chat.state() == "description"


async def test_consent_is_asked_first_and_never_pre_ticked(chat: Chat) -> None:
    replies = await chat.say("/start")
    # The welcome and the consent question are one message.
    assert len(replies) == 1
    consent = replies[0]
    assert "Đường dây nóng" in consent["text"] and "91/2025/QH15" in consent["text"]
    assert [b["data"] for b in consent["buttons"][0] + consent["buttons"][1]] == [
        "consent|yes",
        "consent|no",
    ]
    declined = await chat.press("consent|no")
    assert "Không có sự đồng ý" in texts(declined)
    assert await chat.state() == "idle"


async def test_a_new_consent_text_is_asked_again_and_names_the_rights(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await to_photos(chat)
    # The resident agreed to an earlier wording.
    async with sessions() as s, s.begin():
        await s.execute(update(Consent).values(text_version="2026-11-v1"))
    await chat.say("/cancel")
    replies = await chat.say("/start")
    consent = replies[-1]["text"]
    assert await chat.state() == "consent"
    # Each is kept and tested: the rights (tests/e2e/test_rights.py), the retention
    # (test_retention.py), and what is public (test_case_page.py, test_public_map.py,
    # test_open311.py, test_webhooks.py).
    for promise in (
        "/mydata",
        "/forgetme",
        "/withdraw",
        "không liên hệ trong 12 tháng",
        "vị trí làm tròn (khoảng 100 m), thời điểm tiếp nhận, tiến độ (kèm thời gian từng bước)",
        "các hệ thống kết nối",
        "không bao giờ công khai danh tính của bạn hay nội dung bạn viết",
    ):
        assert promise in consent
    await chat.press("consent|yes")
    async with sessions() as s:
        versions = list(await s.scalars(select(Consent.text_version).order_by(Consent.id)))
    assert versions == ["2026-11-v1", CONSENT_TEXT_VERSION]


async def test_english_from_lang_command(chat: Chat) -> None:
    await chat.say("/start")
    replies = await chat.say("/lang en")
    assert "Switched to English" in texts(replies)
    assert "Do you agree?" in texts(replies)


async def test_album_counts_as_one_step_and_at_most_five_photos(chat: Chat) -> None:
    await to_photos(chat)
    await chat.send("photo", media=PHOTO, media_group="g1")
    for i in range(1, 3):
        other = MediaRef(str(i) * 64, "image/jpeg", 10, 10, 100)
        await chat.send("photo", media=other, media_group="g1")
    replies = await chat.replies()
    assert len(replies) == 1 and "Đã nhận ảnh" in replies[0]["text"]
    for i in range(3, 6):
        await chat.send("photo", media=MediaRef(str(i) * 64, "image/jpeg", 10, 10, 100))
    replies = await chat.replies()
    assert "Đã đủ 5 ảnh" in texts(replies)
    assert await chat.state() == "location"


async def test_skip_photos_reminds_that_evidence_helps(chat: Chat) -> None:
    await to_photos(chat)
    replies = await chat.say("/skip")
    assert "có ảnh thường được xác minh" in texts(replies)
    assert await chat.state() == "location"


@pytest.mark.parametrize(
    ("error", "expected"),
    [("not_image", "không phải ảnh"), ("too_large", "quá lớn"), ("download_failed", "gửi lại")],
)
async def test_bad_files_get_a_clear_message_and_change_nothing(
    chat: Chat, error: str, expected: str
) -> None:
    await to_photos(chat)
    await chat.send("photo", media_error=error)
    assert expected in texts(await chat.replies())
    assert await chat.state() == "photos"


async def test_a_file_that_is_no_photo_is_told_every_format_taken(chat: Chat) -> None:
    await to_photos(chat)
    await chat.send("photo", media_error="not_image")
    told = texts(await chat.replies())
    for name in ("JPEG", "PNG", "WebP", "HEIC"):
        assert name in told, told
    assert set(ACCEPTED_FORMATS) == {"JPEG", "PNG", "WEBP", "HEIF"}, "a format to name"


async def test_location_errors_ask_again(chat: Chat) -> None:
    await to_photos(chat)
    await chat.say("/skip")
    replies = await chat.say("?!")
    assert "Chưa đọc được vị trí" in texts(replies)
    assert replies[-1]["request"] == "location"
    # No geocoder here: an address that names no ward matches nothing.
    replies = await chat.say("ngay cạnh chợ")
    assert "Không tìm thấy địa chỉ «ngay cạnh chợ»" in texts(replies)
    assert replies[-1]["request"] == "location"
    replies = await chat.say("48.8566, 2.3522")
    assert "ngoài lãnh thổ Việt Nam" in texts(replies)
    await chat.send("location", location=(13.7563, 100.5018))
    assert "ngoài lãnh thổ Việt Nam" in texts(await chat.replies())
    assert await chat.state() == "location"
    replies = await chat.say("20.0740, 105.9120")
    wards = [b["data"] for row in replies[-1]["buttons"] for b in row]
    assert wards[0] == "ward|14812" and len(wards) == 3


async def test_ward_by_typed_name(chat: Chat) -> None:
    await to_photos(chat)
    await chat.say("/skip")
    await chat.say("20.0740, 105.9120")
    replies = await chat.say("khong co phuong nao")
    assert "Không tìm thấy" in texts(replies)
    replies = await chat.say("Bim Son")
    assert "Phường Bỉm Sơn, Thanh Hóa" in texts(replies)
    assert await chat.state() == "category"


async def test_descriptions_too_short_or_too_long(chat: Chat) -> None:
    await to_description(chat)
    assert "trống" in texts(await chat.say("   "))
    replies = await chat.say("x" * 10_000)
    assert "10000" in texts(replies) and "2000" in texts(replies)
    assert await chat.state() == "description"
    await chat.say("x" * 2000)
    assert await chat.state() == "summary"


async def test_a_description_of_a_few_letters_needs_a_photo(chat: Chat) -> None:
    await to_photos(chat)
    await chat.say("/skip")
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    await chat.press("category|burning")
    await chat.replies()
    assert await chat.state() == "description"
    replies = await chat.say("Rác quá")
    assert "ít nhất 10 ký tự" in texts(replies) and "7 ký tự" in texts(replies)
    assert await chat.state() == "description"
    await chat.say("Khói đen mỗi tối")
    assert await chat.state() == "summary"


async def test_with_a_photo_a_few_letters_will_do(chat: Chat) -> None:
    await to_description(chat)
    await chat.say("Rác")
    assert await chat.state() == "summary"
    # The photo edited away: the few letters are no longer enough.
    await chat.press("summary|edit")
    await chat.press("edit|photos")
    replies = await chat.press("photos|skip")
    assert "không còn ảnh" in texts(replies)
    assert await chat.state() == "description"
    await chat.say("Rác đổ đầy lề đường.")
    assert await chat.state() == "summary"


async def test_a_photo_before_consent_waits_for_it_and_goes_into_the_report(
    chat: Chat,
) -> None:
    await chat.send("photo", media=PHOTO)
    told = texts(await chat.replies())
    assert "xử lý dữ liệu cá nhân" in told and "Đã giữ ảnh" in told
    assert await chat.state() == "consent"
    replies = await chat.press("consent|yes")
    assert "Đã nhận ảnh" in texts(replies)
    assert await chat.state() == "photos"
    await chat.press("photos|done")
    assert await chat.state() == "location"
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    await chat.press("category|burning")
    await chat.replies()
    # With the photo, a short description is enough.
    await chat.say("Khói")
    assert await chat.state() == "summary"


async def test_a_photo_from_a_resident_who_consented_before_starts_a_report(
    chat: Chat,
) -> None:
    await to_photos(chat)
    await chat.say("/cancel")
    assert await chat.state() == "idle"
    await chat.send("photo", media=PHOTO)
    told = texts(await chat.replies())
    assert "Đã nhận ảnh" in told and "xử lý dữ liệu cá nhân" not in told
    assert await chat.state() == "photos"


async def test_a_photo_before_a_declined_consent_is_dropped(chat: Chat) -> None:
    await chat.send("photo", media=PHOTO)
    await chat.press("consent|no")
    assert await chat.state() == "idle"
    await chat.say("/start")
    replies = await chat.press("consent|yes")
    assert "Bước 1" in texts(replies) and "Đã nhận ảnh" not in texts(replies)
    await chat.press("photos|skip")
    assert await chat.state() == "location"


async def test_invalid_phone_is_refused(chat: Chat) -> None:
    await to_description(chat)
    await chat.say("Rác đổ đầy lề đường.")
    await chat.press("summary|edit")
    await chat.press("edit|contact")
    replies = await chat.say("12345")
    assert "không hợp lệ" in texts(replies)
    assert await chat.state() == "contact"
    replies = await chat.say("+84 912 345 678")
    assert "+84912345678" in texts(replies)
    assert await chat.state() == "summary"
    # A phone given: the summary sends with it, and anonymity stays one edit away.
    assert "summary|confirm" in str(replies[-1]["buttons"])


async def test_a_phone_typed_at_the_summary_sends_the_report_with_it(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await to_description(chat)
    await chat.say("Rác đổ đầy lề đường.")
    replies = await chat.say("12345")
    assert "Số điện thoại Việt Nam có dạng" in texts(replies)
    assert await chat.state() == "summary"
    replies = await chat.say("0912 345 678")
    assert "Mã theo dõi: 38-" in texts(replies) and "+84912345678" in texts(replies)
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
    assert ticket.nature == "unknown" and ticket.urgency == "normal"


async def test_the_optional_details_are_one_step_offered_with_the_summary(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await to_description(chat)
    replies = await chat.say("Rác đổ đầy lề đường.")
    assert "Đối tượng gây ô nhiễm: không rõ" in texts(replies)
    await chat.press("summary|details")
    replies = await chat.say("Công ty ABC")
    assert "Đã ghi đối tượng: Công ty ABC" in texts(replies)
    assert await chat.state() == "details"
    replies = await chat.press("details|one_off")
    assert "Công ty ABC" in texts(replies) and "Đột xuất" in texts(replies)
    assert await chat.state() == "summary"
    await chat.press("summary|anonymous")
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
    assert (ticket.polluter, ticket.nature, ticket.urgency) == ("Công ty ABC", "one_off", "urgent")


@pytest.mark.parametrize(
    ("typed", "state"),
    [("đồng ý", "photos"), ("Agree", "photos"), ("không", "idle"), ("maybe", "consent")],
)
async def test_consent_can_be_typed_and_a_wrong_answer_gets_one_line(
    chat: Chat, typed: str, state: str
) -> None:
    await chat.say("/start")
    replies = await chat.say(typed)
    assert await chat.state() == state
    if state == "consent":
        # A reminder, not the whole text again.
        assert len(replies) == 1 and "91/2025/QH15" not in replies[0]["text"]
        assert "gõ «đồng ý»" in replies[0]["text"] and replies[0]["buttons"]


async def test_stale_and_forged_buttons_change_nothing(chat: Chat) -> None:
    await to_description(chat)
    replies = await chat.press("category|noise")
    assert "Nút này đã cũ" in texts(replies)
    replies = await chat.press("summary|confirm")
    assert "Nút này đã cũ" in texts(replies)
    replies = await chat.press("garbage")
    assert "Nút này đã cũ" in texts(replies)
    assert await chat.state() == "description"


async def test_unknown_commands_and_mismatched_input_keep_the_step(chat: Chat) -> None:
    await to_description(chat)
    replies = await chat.say("/frobnicate")
    assert "Không có lệnh này" in texts(replies)
    await chat.send("location", location=(20.0, 105.0))
    replies = await chat.replies()
    assert "cần mô tả bằng chữ" in texts(replies)
    await chat.send("photo", media=PHOTO)
    assert "cần mô tả bằng chữ" in texts(await chat.replies())
    assert await chat.state() == "description"


async def test_edit_from_summary_returns_to_summary(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await to_description(chat)
    await chat.say("Khói đen bốc lên.")
    await chat.press("summary|details")
    await chat.press("details|one_off")
    assert await chat.state() == "summary"
    await chat.press("summary|edit")
    await chat.press("edit|category")
    replies = await chat.press("category|burning")
    assert "Đốt rác" in texts(replies) and await chat.state() == "summary"
    replies = await chat.press("summary|anonymous")
    assert "Mã theo dõi: 38-" in texts(replies)
    async with sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
    assert ticket.category_code == "burning" and ticket.urgency == "urgent"
    assert ticket.polluter is None and ticket.description == "Khói đen bốc lên."


async def test_codes_follow_province_month_sequence(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    codes = []
    for n in range(2):
        chat = Chat(dispatcher, sessions, chat_id=f"93{n}")
        await to_description(chat)
        await submit(chat, "Nước thải đen.")
        async with sessions() as session:
            codes = list(await session.scalars(select(Ticket.code).order_by(Ticket.id)))
    assert len(codes) == 2
    prefix = codes[0][:8]
    assert prefix.startswith("38-") and codes[1].startswith(prefix)
    assert codes[0].endswith("-00001") and codes[1].endswith("-00002")


async def test_same_update_twice_is_handled_once(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uid = await chat.send("command", command="start", text="/start")
    await chat.send("command", update_id=uid, command="start", text="/start")
    assert len(await chat.replies()) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


async def test_status_shows_details_only_to_the_reporter(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    owner = Chat(dispatcher, sessions, chat_id="9101")
    await to_description(owner)
    await submit(owner, "Bãi rác bí mật.")
    async with sessions() as session:
        code = (await session.scalars(select(Ticket.code))).one()
    mine = texts(await owner.say(f"/status {code}"))
    assert "Bãi rác bí mật." in mine and "Đã tiếp nhận" in mine
    stranger = Chat(dispatcher, sessions, chat_id="9102")
    theirs = texts(await stranger.say(f"/status {code.lower()}"))
    assert "Đã tiếp nhận" in theirs and "UBND Phường Bỉm Sơn" in theirs
    assert "Bãi rác bí mật." not in theirs
    assert "Không có phản ánh" in texts(await stranger.say("/status 01-0000-00000"))
    assert code in texts(await owner.say("/my"))


async def test_cancel_at_any_step(chat: Chat) -> None:
    await to_description(chat)
    assert "Đã huỷ" in texts(await chat.say("/cancel"))
    assert await chat.state() == "idle"


async def test_a_photo_with_gps_offers_its_location(chat: Chat) -> None:
    await to_photos(chat)
    located = MediaRef("c" * 64, "image/jpeg", 64, 48, 900, gps=(20.074, 105.912))
    await chat.send("photo", media=located)
    await chat.replies()
    replies = await chat.press("photos|done")
    buttons = [b["data"] for row in replies[-1]["buttons"] for b in row]
    assert buttons == ["location|photo"]
    replies = await chat.press("location|photo")
    assert await chat.state() == "ward"
    assert "20.07400, 105.91200" in texts(replies)
    assert replies[-1]["buttons"][0][0]["data"] == "ward|14812"
    # Without GPS in the photos there is nothing to offer.
    other = Chat(chat.dispatcher, chat.sessions, chat_id="9002")
    await to_photos(other)
    await other.send("photo", media=PHOTO)
    await other.replies()
    replies = await other.press("photos|done")
    assert replies[-1]["buttons"] == []


async def test_a_channel_without_buttons_gets_numbered_choices_and_pin_help(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    chat = Chat(dispatcher, sessions, chat_id="7001", channel="textonly")
    replies = await chat.say("/start")
    consent = replies[-1]
    assert consent["buttons"] == []
    assert "1. ✅" in consent["text"] and "2. " in consent["text"]
    assert "Trả lời bằng số thứ tự" in consent["text"]
    await chat.say("1")
    replies = await chat.say("/skip")
    assert replies[-1]["request"] is None
    assert "Để gửi ghim" in replies[-1]["text"]
    replies = await chat.say("20.0740, 105.9120")
    assert "1. Phường Bỉm Sơn, Thanh Hóa" in replies[-1]["text"]
    await chat.say("1")
    assert await chat.state() == "category"
    replies = await chat.say("99")  # no such choice: asked again, nothing chosen
    assert await chat.state() == "category"
    await chat.say("1")
    replies = await chat.say("Rác đổ ven đường")
    # The summary: typed phone, or the numbered ways to send.
    assert "Gõ số điện thoại" in replies[-1]["text"]
    assert "1. ✅ Gửi ẩn danh" in replies[-1]["text"] and replies[-1]["buttons"] == []
    await chat.say("2")  # the optional details
    await chat.say("2")  # recurring
    replies = await chat.say("1")  # send anonymously
    assert "38-" in texts(replies)
    async with sessions() as session:
        ticket = await session.scalar(select(Ticket).where(Ticket.channel == "textonly"))
        assert ticket is not None and ticket.ward_code == "14812"


async def test_rate_and_reopen_commands_explain_themselves(chat: Chat) -> None:
    assert "/rate <mã> <số sao 1–5>" in texts(await chat.say("/rate 38-2611-00001"))
    assert "/rate <mã> <số sao 1–5>" in texts(await chat.say("/rate 38-2611-00001 9"))
    assert "/reopen <mã>" in texts(await chat.say("/reopen"))
    # A well-formed command for a ticket that is not theirs changes nothing.
    assert "38-2611-00001" in texts(await chat.say("/rate 38-2611-00001 5"))
    assert await chat.state() == "idle"


async def test_digits_that_are_not_ascii_are_not_numbers(chat: Chat) -> None:
    """'²' passes str.isdigit() but int() refuses it: a rating button or a numbered
    choice carrying it is not a number, and nothing breaks."""
    internal = translate("vi", "error.internal")
    replies = await chat.press("t|38-2611-00001|rate|²")
    assert replies and all(r["text"] != internal for r in replies)
    await chat.say("/start")
    state = await chat.state()
    replies = await chat.say("²")
    assert replies and all(r["text"] != internal for r in replies)
    assert await chat.state() == state


async def test_a_reporter_merged_into_a_case_reopens_it_and_everyone_hears(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    policies = Policies.load()
    async with sessions() as s, s.begin():
        case = await make_ticket(s, chat_id="9101")
        joined = await make_ticket(s, chat_id="9102")
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        await apply(s, joined, Action("merge", case_code=case.code), operator, policies)
        for step in ("classify", "assign"):
            await apply(s, case, Action(step, competence="ward"), operator, policies)
        for step in ("claim", "verify", "confirm"):
            await apply(s, case, Action(step), staff, policies)
        answer = Action("answer", result="Đã thu gom.", photos=[FACTORY_PHOTO])
        await apply(s, case, answer, staff, policies)
        codes = (case.code, joined.code)
    first = Chat(dispatcher, sessions, chat_id="9101")
    second = Chat(dispatcher, sessions, chat_id="9102")
    # The joined reporter's answer carries their own code: "Chưa xử lý xong" on it.
    await second.press(f"t|{codes[1]}|reopen")
    async with sessions() as s:
        reopened = (await s.scalars(select(Ticket).where(Ticket.code == codes[0]))).one()
        told = {
            o.address
            for o in await s.scalars(select(OutboxMessage))
            if o.payload.get("key") == "notify.reopened"
        }
    assert reopened.state == "reopened" and reopened.reopen_count == 1
    assert told == {"9101", "9102"}, "everyone on the case hears it"
    # The case's own reporter presses the same button after: told it is reopened already.
    replies = await first.press(f"t|{codes[0]}|reopen")
    assert "đã được mở lại" in texts(replies)
    async with sessions() as s:
        again = (await s.scalars(select(Ticket).where(Ticket.code == codes[0]))).one()
    assert again.reopen_count == 1


async def sent_report(chat: Chat, description: str = "Rác đổ đầy lề đường.") -> str:
    """A whole report from the chat; its code."""
    await to_description(chat)
    await chat.say(description)
    replies = await chat.press("summary|anonymous")
    code = texts(replies).split("Mã theo dõi: ")[1].split()[0]
    assert code.startswith("38-")
    return code


async def test_a_photo_and_words_after_sending_are_added_to_the_report_and_staff_hear(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        staff = await make_user(s, "ward_staff", "W14812", chat_id="7001")
        await make_user(s, "ward_staff", "W14901", chat_id="7002")  # another ward
        operator = await make_user(s, "operator", "P38", chat_id="7003")
    code = await sent_report(chat)
    other = MediaRef("c" * 64, "image/jpeg", 64, 48, 900)
    await chat.send("photo", media=other)
    offered = texts(await chat.replies())
    assert f"Thêm vào phản ánh {code}" in offered and "1 ảnh" in offered
    assert await chat.state() == "addition"
    # Words before choosing join the same addition.
    offered = texts(await chat.say("Hôm nay lại đổ thêm hai xe."))
    assert "Hôm nay lại đổ thêm hai xe." in offered
    replies = await chat.press(f"addition|{code}")
    assert f"Đã bổ sung vào phản ánh {code} (1 ảnh)" in texts(replies)
    assert await chat.state() == "idle"
    async with sessions() as s:
        ticket = (await s.scalars(select(Ticket).where(Ticket.code == code))).one()
        kinds = [p.kind for p in await s.scalars(select(Photo).where(Photo.ticket_id == ticket.id))]
        added = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "added_info"))).one()
        notices = [
            (o.address, o.payload["params"]["code"])
            for o in await s.scalars(select(OutboxMessage))
            if o.payload.get("key") == "addition.staff"
        ]
    assert kinds == ["evidence", "addition"]
    assert added.ticket_id == ticket.id and added.note == "Hôm nay lại đổ thêm hai xe."
    # Not yet forwarded: the province's operators hear it, not the ward.
    assert notices == [(operator.telegram_chat_id, code)]

    # Forwarded to the ward: its staff hear the next one, and the reporter is told so.
    async with sessions() as s, s.begin():
        forwarded = (await s.scalars(select(Ticket).where(Ticket.code == code))).one()
        triage = await actor(s, "operator", "P38")
        await apply(s, forwarded, Action("classify", competence="ward"), triage, Policies.load())
        await apply(s, forwarded, Action("assign"), triage, Policies.load())
    await chat.say("Xe tải đổ rác lúc 5 giờ sáng nay.")
    replies = await chat.press(f"addition|{code}")
    assert "Cán bộ xử lý đã được báo" in texts(replies)
    async with sessions() as s:
        told = [
            o.address
            for o in await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            if o.payload.get("key") == "addition.staff"
        ]
    assert told == [operator.telegram_chat_id, staff.telegram_chat_id], "the ward's staff only"


async def test_an_addition_nobody_can_be_told_of_says_where_staff_will_see_it(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Staff without a linked chat (or none at all): the reporter is not told they were
    notified, only that it is on the report's page."""
    code = await sent_report(chat)
    await chat.say("Hôm nay lại đổ thêm hai xe rác.")
    replies = await chat.press(f"addition|{code}")
    said = texts(replies)
    assert "sẽ thấy trên trang phản ánh" in said and "đã được báo" not in said


async def test_a_greeting_after_a_report_gets_the_help_not_an_offer(chat: Chat) -> None:
    await sent_report(chat)
    replies = await chat.say("Cảm ơn!")
    assert "/start" in texts(replies) and await chat.state() == "idle"


async def test_an_album_after_a_report_is_one_offer(chat: Chat) -> None:
    await sent_report(chat)
    for n in range(3):
        await chat.send(
            "photo", media=MediaRef(str(n) * 64, "image/jpeg", 8, 8, 99), media_group="a1"
        )
    replies = await chat.replies()
    assert len(replies) == 1 and "Thêm vào phản ánh" in replies[0]["text"]
    replies = await chat.say("/cancel")
    assert await chat.state() == "idle"


async def test_a_new_report_from_words_keeps_them_as_its_description(chat: Chat) -> None:
    await sent_report(chat)
    await chat.say("Có người đốt rác ở bãi đất trống sau trường.")
    replies = await chat.press("addition|new")
    assert len(replies) == 1 and "Bước 1" in replies[0]["text"]
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    replies = await chat.press("category|burning")
    if await chat.state() == "duplicate":
        replies = await chat.press("duplicate|new")
    assert "Có người đốt rác ở bãi đất trống sau trường." in texts(replies)
    replies = await chat.press("description|keep")
    assert await chat.state() == "summary"
    assert "Mô tả: Có người đốt rác ở bãi đất trống sau trường." in texts(replies)


async def test_with_several_open_reports_the_reporter_picks_one(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = await sent_report(chat)
    second = await sent_report(chat, "Khói đen từ lò đốt rác.")
    replies = await chat.say("Thêm: có mùi khét vào buổi tối.")
    offered = replies[-1]
    buttons = [b["data"] for row in offered["buttons"] for b in row]
    assert buttons == [f"addition|{second}", f"addition|{first}", "addition|new", "addition|cancel"]
    assert first in texts(replies) and second in texts(replies)
    await chat.press(f"addition|{first}")
    async with sessions() as s:
        noted = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "added_info"))).one()
        ticket = await s.get(Ticket, noted.ticket_id)
    assert ticket is not None and ticket.code == first


async def test_a_report_closed_before_the_choice_is_not_added_to(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    code = await sent_report(chat)
    await chat.send("photo", media=PHOTO)
    await chat.replies()
    async with sessions() as s, s.begin():
        ticket = (await s.scalars(select(Ticket).where(Ticket.code == code))).one()
        operator = await actor(s, "operator", "P38")
        await apply(s, ticket, Action("reject", reason="spam"), operator, Policies.load())
    replies = await chat.press(f"addition|{code}")
    assert "vừa kết thúc" in texts(replies)
    async with sessions() as s:
        assert (
            await s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "added_info")
            )
            == 0
        )
    # Nothing else open: the photo starts a new report instead.
    await chat.send("photo", media=PHOTO)
    assert await chat.state() == "photos"


async def test_a_new_report_from_the_offer_begins_with_the_photo(chat: Chat) -> None:
    await sent_report(chat)
    await chat.send("photo", media=PHOTO)
    await chat.replies()
    replies = await chat.press("addition|new")
    assert "Đã nhận ảnh" in texts(replies)
    assert await chat.state() == "photos"
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    await chat.press("category|burning")
    await chat.replies()
    if await chat.state() == "duplicate":
        await chat.press("duplicate|new")
    replies = await chat.say("Khói")  # with the photo, a few letters will do
    assert "Ảnh: 1" in texts(replies)


async def test_a_merged_reporter_adds_to_the_case(
    dispatcher: Dispatcher, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        case = await make_ticket(s, chat_id="9201")
        joined = await make_ticket(s, chat_id="9202")
        assert joined.reporter_id is not None
        await record_consent(s, joined.reporter_id, "vi")
        operator = await actor(s, "operator", "P38")
        await apply(s, joined, Action("merge", case_code=case.code), operator, Policies.load())
        case_code = case.code
    chat = Chat(dispatcher, sessions, chat_id="9202")
    offered = texts(await chat.say("Vẫn còn đổ rác ở đây."))
    assert f"Thêm vào phản ánh {case_code}" in offered
    await chat.press(f"addition|{case_code}")
    async with sessions() as s:
        noted = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "added_info"))).one()
    assert noted.ticket_id == case.id


AUTO_38 = "[province.38]\nauto_classify = true\n"


async def test_a_province_may_classify_and_forward_clear_reports_at_once(
    sessions: async_sessionmaker[AsyncSession], writer: AsyncEngine
) -> None:
    async with sessions() as session:
        wards = await WardIndex.load(session)
    policies = Policies.from_text(AUTO_38, "test")
    d = Dispatcher(writer, Services(wards=wards, policies=policies), {"telegram": TELEGRAM_LIKE})
    d.start()
    try:
        chat = Chat(d, sessions, chat_id="9301")
        await to_description(chat)
        await chat.say("Rác đổ đầy lề đường.")
        replies = await chat.press("summary|anonymous")
        assert "đã được chuyển ngay tới UBND Phường Bỉm Sơn" in texts(replies)
        other = Chat(d, sessions, chat_id="9302")
        await to_photos(other)
        await other.send("location", location=(20.0740, 105.9120))
        await other.press("ward|14812")
        await other.press("category|other")
        await other.replies()
        if await other.state() == "duplicate":
            await other.press("duplicate|new")
        await other.say("Mùi lạ từ bãi đất trống.")
        replies = await other.press("summary|anonymous")
        assert "sẽ được phân loại" in texts(replies)
    finally:
        await d.stop()
    async with sessions() as s:
        tickets = {t.category_code: t for t in await s.scalars(select(Ticket))}
        trail = [
            (e.actor, e.action)
            for e in await s.scalars(
                select(AuditEvent)
                .where(AuditEvent.ticket_id == tickets["dumping"].id)
                .order_by(AuditEvent.id)
            )
        ]
        notices = [o.payload.get("key") for o in await s.scalars(select(OutboxMessage))]
    assert tickets["dumping"].state == "assigned" and tickets["dumping"].competence == "ward"
    assert trail == [("reporter", "submit"), ("auto", "classify"), ("auto", "assign")]
    # "Khác" needs a person: it waits for the operator.
    assert tickets["other"].state == "received"
    # The confirmation said where it went: no second message about it.
    assert "notify.assigned" not in notices
    # Intake can still reclassify it until it is taken up (the ward cannot), or move it.
    async with sessions() as s, s.begin():
        ticket = await s.get(Ticket, tickets["dumping"].id)
        assert ticket is not None
        operator = await actor(s, "operator", "P38")
        staff = await actor(s, "ward_staff", "W14812")
        again = Action("reclassify", urgency="urgent", competence="police")
        with pytest.raises(WorkflowError, match="forbidden"):
            await apply(s, ticket, again, staff, policies)
        await apply(s, ticket, again, operator, policies)
        police = await s.get(Unit, ticket.unit_id)
        assert (ticket.state, ticket.urgency, police and police.code) == (
            "assigned",
            "urgent",
            "C38",
        )
        move = Action("transfer", competence="province", reason="Cơ sở sản xuất")
        await apply(s, ticket, move, operator, policies)
        assert ticket.state == "transferred"


def test_auto_classify_is_off_by_default_and_takes_true_or_false_only() -> None:
    assert Policies.load().for_province("38").auto_classify is False
    assert Policies.from_text(AUTO_38, "t").for_province("38").auto_classify is True
    assert Policies.from_text(AUTO_38, "t").for_province("79").auto_classify is False
    with pytest.raises(ValueError, match="true or false"):
        Policies.from_text('[province.38]\nauto_classify = "yes"\n', "t")


async def test_a_sentence_with_a_number_at_the_summary_does_not_send_the_report(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await to_description(chat)
    await chat.say("Rác đổ đầy lề đường.")
    for typed in ("Chủ bãi là ông Tuấn, sđt 0912345678", "Nhà máy gạch ở số 24 38253123"):
        replies = await chat.say(typed)
        assert "Số điện thoại Việt Nam có dạng" in texts(replies), typed
        assert await chat.state() == "summary"
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 0


async def test_photos_sent_stay_when_the_step_is_asked_again(chat: Chat) -> None:
    await to_photos(chat)
    for n in (1, 2):
        await chat.send("photo", media=MediaRef(str(n) * 64, "image/jpeg", 8, 8, 99))
    await chat.say("/help")
    replies = await chat.say("không biết")  # not a place either: asked again
    assert "Xong" in str(replies[-1]["buttons"])
    await chat.press("photos|done")
    await chat.send("location", location=(20.0740, 105.9120))
    await chat.press("ward|14812")
    await chat.press("category|dumping")
    if await chat.state() == "duplicate":
        await chat.press("duplicate|new")
    replies = await chat.say("Rác")
    assert "Ảnh: 2" in texts(replies)


async def test_the_keyboard_that_shared_the_place_is_removed_before_inline_buttons(
    chat: Chat,
) -> None:
    """Telegram cannot remove a keyboard and show inline buttons in one message: the
    acknowledgement removes it, and the question with buttons follows."""
    await to_photos(chat)
    await chat.send("location", location=(20.0740, 105.9120))
    received, ward = await chat.replies()
    assert received["remove_keyboard"] is True and "Đã nhận vị trí" in received["text"]
    assert ward["buttons"] and ward["remove_keyboard"] is False
