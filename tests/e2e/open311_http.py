"""Helpers for the Open311 tests: a partner key, a resident's ticket with a known identity,
and the spec's answers read in JSON or XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Reporter, ReporterIdentity, Ticket
from backend.services.partners import issue_key
from backend.services.reporters import set_phone
from tests.factories import make_ticket

FORMATS = ("json", "xml")
ROOT = "/open311/v2"
IN_BIM_SON = {"lat": "20.0745", "long": "105.9125"}  # Thanh Hóa (38)
IN_SAI_GON = {"lat": "10.7805", "long": "106.704"}  # Hồ Chí Minh City (79)
IN_PARIS = {"lat": "48.8566", "long": "2.3522"}


async def partner_key(
    sessions: async_sessionmaker[AsyncSession], province: str = "38", name: str = "Cổng PAHT"
) -> str:
    async with sessions() as s, s.begin():
        return (await issue_key(s, province, name)).key


@dataclass(frozen=True)
class Resident:
    """What must never come out of Open311: the reporter in every form, and the polluter."""

    code: str
    phone: str
    chat_id: str
    pseudonym: str
    display_name: str
    polluter: str

    def secrets(self) -> list[str]:
        local = "0" + self.phone.removeprefix("+84")
        return [
            self.phone,
            self.phone.removeprefix("+"),
            local,
            self.chat_id,
            self.pseudonym,
            self.display_name,
            self.polluter,
            "Nhà ông Tư",  # the place the resident typed
        ]


async def resident_ticket(sessions: async_sessionmaker[AsyncSession]) -> Resident:
    """A chat report by a resident with a phone, a chat id, a pseudonym and a name, naming
    a polluter, with the phone in the description and the place typed."""
    chat_id, phone = "774411223", "+84912345678"
    async with sessions() as s, s.begin():
        ticket = await make_ticket(s, chat_id=chat_id)
        assert ticket.reporter_id is not None
        await set_phone(s, ticket.reporter_id, phone)
        identity = await s.get(ReporterIdentity, ticket.reporter_id)
        assert identity is not None
        identity.display_name = "Trần Thị Bích Ngọc"
        ticket.polluter = "Công ty TNHH Xả Thải Đêm"
        ticket.description = "Gọi tôi 0912345678, nhà ông Tư xả rác"
        ticket.address = "Nhà ông Tư, ngõ 5"
        pseudonym = await s.scalar(
            select(Reporter.pseudonym).where(Reporter.id == ticket.reporter_id)
        )
        assert pseudonym is not None
        return Resident(
            ticket.code, phone, chat_id, pseudonym, identity.display_name, ticket.polluter
        )


async def ticket_by_code(sessions: async_sessionmaker[AsyncSession], code: str) -> Ticket:
    async with sessions() as s:
        ticket = await s.scalar(select(Ticket).where(Ticket.code == code))
        assert ticket is not None
        return ticket


def parse_xml(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'), body[:60]
    return ET.fromstring(body)  # noqa: S314 (our own server's answer)


def errors_of(fmt: str, body: bytes) -> list[tuple[int, str]]:
    """The spec's error list, read in either format (and checked for its shape)."""
    if fmt == "json":
        data = json.loads(body)
        assert isinstance(data, list) and data, data
        assert all(set(e) == {"code", "description"} for e in data), data
        return [(int(e["code"]), str(e["description"])) for e in data]
    root = parse_xml(body)
    assert root.tag == "errors", root.tag
    found = []
    for error in root:
        assert error.tag == "error"
        assert [c.tag for c in error] == ["code", "description"]
        found.append((int(error.findtext("code") or "0"), error.findtext("description") or ""))
    assert found
    return found


def requests_of(fmt: str, body: bytes) -> list[dict[str, Any]]:
    """The service requests in an answer, as dicts of text (XML) or values (JSON)."""
    if fmt == "json":
        data = json.loads(body)
        assert isinstance(data, list), data
        return data
    root = parse_xml(body)
    assert root.tag == "service_requests", root.tag
    assert all(r.tag == "request" for r in root)
    return [{c.tag: c.text for c in r} for r in root]
