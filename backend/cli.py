"""`hotline` commands; the composition root that wires the web app and the chat runtime."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from sqlalchemy.engine import make_url

from backend.config import Settings
from backend.db import create_engine, session_factory
from backend.migrate import upgrade
from backend.services.accounts import ROLES, create_user
from backend.services.categories import seed_categories
from backend.services.staff_groups import create_link_code
from backend.services.units import import_units
from backend.web.api import mount_api
from backend.web.app import create_app
from backend.web.auth import session_middleware
from backend.web.dashboard import mount_dashboard

log = logging.getLogger("hotline")


def build_app(settings: Settings) -> web.Application:
    """The whole service: web app plus chat runtime. Tests build it the same way."""
    from bot.runtime import mount_chat

    app = create_app(settings)
    app.middlewares.append(session_middleware)
    mount_dashboard(app)
    mount_api(app)
    mount_chat(app)
    return app


async def _freeze_heap(_app: web.Application) -> None:
    """Keep what startup built (modules, the ward index) out of later GC passes.

    A full collection over that heap stalls the loop for 60–100 ms, which every request
    in flight would wait out.
    """
    gc.collect()
    gc.freeze()


def run_server(settings: Settings, host: str, port: int, *, banner: bool = True) -> None:
    """Run the service until interrupted."""
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    app.on_startup.append(_freeze_heap)
    web.run_app(app, host=host, port=port, access_log=None, print=print if banner else None)


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


async def migrate(settings: Settings) -> None:
    """Apply migrations and refresh the built-in reference data (categories)."""
    _ensure_sqlite_dir(settings.database_url)
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await seed_categories(session)
    finally:
        await engine.dispose()


async def load_units(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            counts = await import_units(session)
    finally:
        await engine.dispose()
    log.info(
        "imported %d provinces, %d wards, %d handling units",
        counts.provinces,
        counts.wards,
        counts.units,
    )


async def add_user(settings: Settings, args: argparse.Namespace) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            created = await create_user(
                session,
                args.username,
                args.role,
                display_name=args.name,
                unit_code=args.unit,
                telegram_chat_id=args.telegram,
            )
    finally:
        await engine.dispose()
    # The one-time password goes to the terminal of whoever created the account, once.
    print(f"user {created.user.username} ({created.user.role}) created")
    print(f"one-time password: {created.one_time_password}")


async def new_link_code(settings: Settings, unit_code: str) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            code = await create_link_code(session, unit_code)
    finally:
        await engine.dispose()
    print(f"in the unit's Telegram group, type: /link {code}   (valid for 24 hours)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hotline", description="Pollution hotline service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the web service and the chat bots")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    sub.add_parser("migrate", help="create or upgrade the database schema")
    sub.add_parser("import-units", help="load the 34 provinces and 3,321 wards")
    new_user = sub.add_parser("create-user", help="a staff account; prints a one-time password")
    new_user.add_argument("username")
    new_user.add_argument("--role", required=True, choices=ROLES)
    new_user.add_argument("--unit", help="unit code: W<ward>, P<province>, C<province>, MOAE")
    new_user.add_argument("--name", help="display name")
    new_user.add_argument("--telegram", help="Telegram chat id for escalations and cards")
    link = sub.add_parser("link-code", help="a one-time code that links a group to a unit")
    link.add_argument("--unit", required=True, help="unit code, e.g. W14812")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings()
    if args.command == "serve":
        run_server(settings, args.host, args.port)
    elif args.command == "migrate":
        asyncio.run(migrate(settings))
        log.info("database is at the latest schema")
    elif args.command == "import-units":
        asyncio.run(load_units(settings))
    elif args.command == "link-code":
        try:
            asyncio.run(new_link_code(settings, args.unit))
        except ValueError as exc:
            parser.error(str(exc))
    elif args.command == "create-user":
        try:
            asyncio.run(add_user(settings, args))
        except ValueError as exc:
            parser.error(str(exc))
