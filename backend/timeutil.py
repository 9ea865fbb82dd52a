"""Local time for Vietnam: storage is UTC, people read Asia/Ho_Chi_Minh."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def local(dt: datetime) -> datetime:
    return dt.astimezone(VN_TZ)


def format_local(dt: datetime) -> str:
    """'14:05 22/11/2026', the way Vietnamese forms write a time."""
    return local(dt).strftime("%H:%M %d/%m/%Y")
