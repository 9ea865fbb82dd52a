"""Urgency and nature are two axes: normal urgency is "thông thường", a recurring report
is "thường xuyên", and no label of one axis uses the other's word."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.i18n import read_catalogue

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = {
    "report": (ROOT / "backend" / "locales", "report"),
    "web": (ROOT / "backend" / "web" / "locales", "web"),
    "chat": (ROOT / "handlers" / "locales", "messages"),
}
URGENCY_NORMAL = {
    "report": ["fig.normal", "col.normal_count", "col.normal_median", "col.normal_p90"],
    "web": ["urgency.normal"],
    "chat": ["card.urgency.normal"],
}
NATURE_RECURRING = {"web": ["phone.recurring"], "chat": ["nature.recurring"]}


@pytest.mark.parametrize("where", sorted(URGENCY_NORMAL))
def test_normal_urgency_is_thong_thuong_never_thuong_xuyen(where: str) -> None:
    catalogue = read_catalogue(*_dir(where))
    for key in URGENCY_NORMAL[where]:
        assert catalogue[key].startswith("Thông thường"), (key, catalogue[key])
        assert "xuyên" not in catalogue[key].lower()


@pytest.mark.parametrize("where", sorted(NATURE_RECURRING))
def test_a_recurring_report_is_thuong_xuyen(where: str) -> None:
    catalogue = read_catalogue(*_dir(where))
    for key in NATURE_RECURRING[where]:
        assert catalogue[key].startswith("Thường xuyên"), (key, catalogue[key])


def _dir(where: str) -> tuple[Path, str, str]:
    directory, domain = CATALOGUES[where]
    return directory, "vi", domain
