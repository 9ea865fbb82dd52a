"""/api/v1/stats and `hotline report` against a month of tickets: the figures, each
role's scope, and clear refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.models import utcnow
from backend.web.api import TEST_USER_HEADER
from tests.e2e.conftest import free_port, running
from tests.factories import make_user
from tests.stats_month import OCT_FIRST, OCT_LAST, W1, build_month, chosen, expected, overdue_now


def _wanted(**scope: str) -> dict[str, Any]:
    stories = chosen(OCT_FIRST, OCT_LAST, **scope)
    return {**expected(stories), "overdue": overdue_now(stories, utcnow())}


async def test_the_api_answers_each_role_in_its_scope(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    async with sessions() as s, s.begin():
        await build_month(s)
        names = {
            role: (await make_user(s, role, unit)).username
            for role, unit in (
                ("supervisor", "P38"),
                ("ward_staff", f"W{W1}"),
                ("admin", None),
            )
        }
    base = f"http://127.0.0.1:{free_port()}"
    served = settings.model_copy(update={"public_url": base})

    async def get(who: str | None, query: str) -> tuple[int, dict[str, Any]]:
        headers = {TEST_USER_HEADER: names[who]} if who else {}
        async with http.get(f"{base}/api/v1/stats?{query}", headers=headers) as r:
            return r.status, await r.json()

    async with running(served), aiohttp.ClientSession() as http:
        status, body = await get("supervisor", "month=2026-10")
        assert status == 200
        assert body["scope"]["province_code"] == "38"
        assert body["scope"]["name"] == "Tỉnh Thanh Hóa"
        assert body["total"] == _wanted(province="38")
        assert [w["code"] for w in body["by_ward"]] == sorted(
            {s.ward for s in chosen(OCT_FIRST, OCT_LAST, province="38")}
        )
        # A supervisor may narrow to a ward of the province, not look at another one.
        status, body = await get("supervisor", f"month=2026-10&ward={W1}")
        assert (status, body["total"]) == (200, _wanted(ward=W1))
        status, body = await get("supervisor", "month=2026-10&province=01")
        assert (status, body["error"]) == (403, "forbidden")
        # Ward staff see their ward, whatever they ask for in the province.
        status, body = await get("ward_staff", "month=2026-10")
        assert (status, body["scope"]["ward_code"]) == (200, W1)
        assert body["total"] == _wanted(ward=W1)
        status, body = await get("ward_staff", "month=2026-10&ward=14797")
        assert (status, body["error"]) == (403, "forbidden")
        # Admins see any province, or the whole country; the 25th cut too.
        status, body = await get("admin", "month=2026-10&province=01")
        assert body["total"] == _wanted(province="01")
        status, body = await get("admin", "month=2026-10&period=cut25&category=dumping")
        assert body["period"]["first_day"] == "2026-09-25"
        cut = chosen(OCT_FIRST.replace(month=9, day=25), OCT_LAST.replace(day=24))
        dumping = [s for s in cut if s.category == "dumping"]
        assert body["total"] == {**expected(dumping), "overdue": overdue_now(dumping, utcnow())}
        # Clear refusals.
        assert (await get("admin", "month=2026-13"))[0] == 400
        assert (await get("admin", "month=2026-10&ward=99999"))[1]["error"] == "unknown_ward"
        assert (await get("admin", "period=weekly"))[1]["error"] == "bad_period"
        assert (await get(None, "month=2026-10"))[0] == 401


async def _hotline(database_url: str, cwd: Path, *args: str) -> tuple[int, bytes, bytes]:
    command = Path(sys.executable).parent / "hotline"
    env = {**os.environ, "HOTLINE_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        str(command),
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


async def test_the_report_command(
    sessions: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    async with sessions() as s, s.begin():
        await build_month(s)
    code, out, _ = await _hotline(
        database_url,
        tmp_path,
        "report",
        "--month",
        "2026-10",
        "--province",
        "38",
        "--format",
        "json",
        "--out",
        "-",
    )
    assert code == 0
    body = json.loads(out)
    assert body["total"] == _wanted(province="38")
    # The default format is XLSX, named after the period and the scope.
    code, out, _ = await _hotline(
        database_url, tmp_path, "report", "--month", "2026-10", "--ward", W1
    )
    assert code == 0, out
    written = tmp_path / f"bao-cao-2026-10-38-{W1}.xlsx"
    assert f"{written.name}: {_wanted(ward=W1)['received']} reports".encode() in out
    book = load_workbook(io.BytesIO(written.read_bytes()))
    assert book["Tổng hợp"]["A2"].value == "Đơn vị: Phường Bỉm Sơn, Tỉnh Thanh Hóa"
    assert book["Tổng hợp"]["C8"].value == _wanted(ward=W1)["received"]
    code, out, _ = await _hotline(
        database_url,
        tmp_path,
        "report",
        "--month",
        "2026-10",
        "--format",
        "csv",
        "--out",
        "oct.csv",
    )
    assert code == 0
    text = (tmp_path / "oct.csv").read_text(encoding="utf-8-sig")
    assert text.splitlines()[1] == "Đơn vị: Toàn quốc"
    # Bad input: a clear message and a usage error, no file.
    code, _, err = await _hotline(database_url, tmp_path, "report", "--month", "10/2026")
    assert code == 2 and b"bad_month" in err and b"yyyy-mm" in err
    code, _, err = await _hotline(database_url, tmp_path, "report", "--province", "99")
    assert code == 2 and b"unknown_province" in err
