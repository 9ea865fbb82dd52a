"""The demo's training accounts: one per role, and a ward's staff and leader for each
ward the README's examples use. Their passwords are derived from a seed kept in the
database, so they stay the same across restarts of the same installation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import InstanceSecret, Unit, User, Ward
from backend.services.accounts import new_password_hash, verify_password
from backend.services.units import police_unit_code, province_unit_code, ward_unit_code
from backend.services.upsert import insert_for

log = logging.getLogger(__name__)

SEED_NAME = "demo-password-seed"
# Thanh Hóa, and the wards of the README's examples: Phường Bỉm Sơn (Thanh Hóa) and
# Phường Sài Gòn (Thành phố Hồ Chí Minh, whose intake has accounts of its own).
DEMO_PROVINCE = "38"
DEMO_WARDS = ("14812", "26740")
OTHER_PROVINCES = ("79",)


@dataclass(frozen=True, slots=True)
class DemoAccount:
    username: str
    role: str
    unit_code: str | None
    display_name: str
    password: str = ""


async def demo_accounts(session: AsyncSession) -> list[DemoAccount]:
    """The accounts the demo gives, without passwords."""
    department = province_unit_code(DEMO_PROVINCE)
    accounts = [
        DemoAccount("demo-operator", "operator", department, "Tổng đài viên (demo)"),
        DemoAccount("demo-supervisor", "supervisor", department, "Giám sát Sở NN&MT (demo)"),
        DemoAccount("demo-police", "police", police_unit_code(DEMO_PROVINCE), "Công an (demo)"),
        DemoAccount("demo-admin", "admin", None, "Quản trị (demo)"),
    ]
    for code in OTHER_PROVINCES:
        unit = province_unit_code(code)
        accounts += [
            DemoAccount(f"demo-operator-{code}", "operator", unit, f"Tổng đài viên {code} (demo)"),
            DemoAccount(f"demo-supervisor-{code}", "supervisor", unit, f"Giám sát {code} (demo)"),
        ]
    for code in DEMO_WARDS:
        ward = await session.get(Ward, code)
        name = ward.name if ward is not None else code
        unit = ward_unit_code(code)
        accounts += [
            DemoAccount(f"demo-staff-{code}", "ward_staff", unit, f"Cán bộ {name} (demo)"),
            DemoAccount(f"demo-leader-{code}", "ward_leader", unit, f"Lãnh đạo {name} (demo)"),
        ]
    return accounts


async def _seed(session: AsyncSession) -> bytes:
    """The installation's seed, made by whichever process asks first."""
    await session.execute(
        insert_for(session, InstanceSecret)
        .values(name=SEED_NAME, value=secrets.token_urlsafe(32))
        .on_conflict_do_nothing(index_elements=["name"])
    )
    value = await session.scalar(
        select(InstanceSecret.value).where(InstanceSecret.name == SEED_NAME)
    )
    if value is None:
        raise RuntimeError("the demo seed was not kept")
    return value.encode()


async def _user(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


def demo_password(seed: bytes, username: str) -> str:
    digest = hmac.new(seed, f"demo-account:{username}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:16]


class DemoRefused(Exception):
    """The database is not the demo's own: it holds real staff accounts."""


async def check_demo_database(session: AsyncSession) -> None:
    """DemoRefused when the database holds staff accounts that are not the demo's: the
    demo's admin and operator could otherwise reach real accounts and reporters."""
    real = await session.scalar(select(func.count()).select_from(User).where(User.demo.is_(False)))
    if real:
        raise DemoRefused(
            f"this database holds {real} staff account(s) that are not the demo's: the demo "
            "runs only on a database of its own (set HOTLINE_DATABASE_URL to another one)"
        )


async def seed_demo_accounts(session: AsyncSession) -> list[DemoAccount]:
    """Make (or repair) the demo accounts; they log in only while the demo runs. Refused
    (DemoRefused) on a database with real accounts."""
    await check_demo_database(session)
    seed = await _seed(session)
    ready = []
    for account in await demo_accounts(session):
        password = demo_password(seed, account.username)
        unit_id = None
        if account.unit_code is not None:
            unit_id = await session.scalar(select(Unit.id).where(Unit.code == account.unit_code))
            if unit_id is None:
                log.warning("no unit %s: run `hotline import-units`", account.unit_code)
                continue
        user = await _user(session, account.username)
        fresh = user is None
        if user is None:
            # Another process starting the demo at the same moment may make it first.
            await session.execute(
                insert_for(session, User)
                .values(
                    username=account.username,
                    display_name=account.display_name,
                    role=account.role,
                    unit_id=unit_id,
                    demo=True,
                    password_hash=await new_password_hash(password),
                )
                .on_conflict_do_nothing(index_elements=["username"])
            )
            user = await _user(session, account.username)
        if user is None or not user.demo:
            log.warning("%s is a real account: not used by the demo", account.username)
            continue
        if not fresh and not await verify_password(user.password_hash, password):
            user.password_hash = await new_password_hash(password)
        user.role, user.unit_id, user.active = account.role, unit_id, True
        user.must_change_password = False
        ready.append(replace(account, password=password))
    return ready
