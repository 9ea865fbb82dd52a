"""The ticket's timeline in words: every machine note the workflow writes is said in
words, with who did it."""

from __future__ import annotations

from datetime import UTC, datetime

from backend.models import AuditEvent, Unit, User
from backend.web.dashboard import TEXT
from backend.web.timeline import Names, describe

AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
WARD = Unit(id=1, code="W14812", name="UBND Phường Bỉm Sơn", kind="ward")
DEPT = Unit(id=2, code="P38", name="Sở NN&MT Thanh Hóa", kind="province")
MINISTRY = Unit(id=3, code="MOAE", name="Bộ Nông nghiệp và Môi trường", kind="ministry")
LAN = User(id=7, username="lan", display_name="Lan", role="ward_leader", unit_id=1)


NAMES = Names({7: LAN}, {"W14812": WARD, "P38": DEPT, "MOAE": MINISTRY}, {3: "A7K2"})


def said(
    actor: str,
    action: str,
    note: str | None,
    to_state: str | None = None,
    reader: str = "ward_staff",
) -> str:
    event = AuditEvent(
        actor=actor, action=action, note=note, from_state="x", to_state=to_state, created_at=AT
    )
    [step] = describe(
        [event],
        NAMES,
        lambda key, **p: TEXT.translate("vi", key, **p),
        TEXT.catalogue("vi"),
        reader,
    )
    return " | ".join(filter(None, [step.what, step.who, step.detail]))


def test_each_machine_note_is_said_in_words() -> None:
    assert said("reporter", "submit", "zalo_oa; 2 photo(s)") == (
        "Tiếp nhận | Người phản ánh | qua Zalo OA, 2 ảnh"
    )
    assert said("auto", "classify", "urgency=urgent; competence=default") == (
        "Phân loại | Tự động (tỉnh bật tự phân loại) | mức độ: Khẩn; thẩm quyền: theo lĩnh vực"
    )
    assert said("auto", "assign", "W14812").endswith("tới UBND Phường Bỉm Sơn")
    assert said("user:7", "transfer", "W14812 → P38: Cơ sở sản xuất lớn") == (
        "Chuyển cơ quan khác | Lan (Lãnh đạo UBND, UBND Phường Bỉm Sơn)"
        " | từ UBND Phường Bỉm Sơn sang Sở NN&MT Thanh Hóa. Lý do: Cơ sở sản xuất lớn"
    )
    assert said("reporter:3", "reopen", "not fixed (reporter)") == (
        "Mở lại | Người phản ánh #A7K2 | người phản ánh báo chưa xử lý xong"
    )
    assert said("system", "close", "reopen window over") == (
        "Kết thúc | Hệ thống | hết thời hạn người phản ánh có thể mở lại"
    )
    assert said("user:7", "assign", "MOAE").endswith("tới Bộ Nông nghiệp và Môi trường")
    assert said("user:7", "reclassify", "urgency=urgent; competence=province") == (
        "Phân loại lại | Lan (Lãnh đạo UBND, UBND Phường Bỉm Sơn)"
        " | mức độ: Khẩn; thẩm quyền: Sở NN&MT"
    )


def test_who_looked_at_an_identity_is_named_to_supervisors_and_admins_only() -> None:
    looked = ("user:7", "show_identity", "Gọi lại để hẹn xác minh")
    for reader in ("ward_staff", "operator"):
        assert said(*looked, reader=reader) == (
            "Xem danh tính | Lãnh đạo UBND | Gọi lại để hẹn xác minh"
        )
    assert "Lan (" in said(*looked, reader="supervisor")
    assert "Tin rác" in said("user:7", "reject", "spam")
    assert said("user:9", "claim", None) == "Nhận xử lý | Cán bộ"
    assert said("operator", "phone_intake", None) == (
        "Tổng đài viên nhập phản ánh qua điện thoại | Cán bộ tiếp nhận"
    )
    # A reason typed by staff is shown as written.
    assert said("user:7", "not_confirmed", "Không thấy rác tại chỗ").endswith(
        "Không thấy rác tại chỗ"
    )


def test_hiding_and_publishing_are_said_in_words() -> None:
    assert said("user:7", "hide", "Đang có tranh chấp đất") == (
        "Ẩn khỏi trang công khai | Lan (Lãnh đạo UBND, UBND Phường Bỉm Sơn)"
        " | Đang có tranh chấp đất"
    )
    assert said("user:7", "unhide", "Đã giải quyết").startswith("Hiện lại trên trang công khai")
    assert said("user:7", "publish_photo", "evidence 12").endswith(
        "Công khai ảnh | Lan (Lãnh đạo UBND, UBND Phường Bỉm Sơn) | ảnh hiện trường #12"
    )
    assert said("user:7", "unpublish_photo", "result 3").endswith("| ảnh kết quả #3")
    assert said("user:7", "publish_photo", "addition 4").endswith("| ảnh bổ sung #4")
