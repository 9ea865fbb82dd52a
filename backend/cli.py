"""`hotline` commands; the composition root that wires the web app and the chat runtime."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from pydantic import SecretStr, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from backend.config import Settings
from backend.crypto import DataKeyError, install, new_key
from backend.db import (
    compact_sealed_tables,
    engine_for,
    open_keys,
    schema_revision,
    session_factory,
)
from backend.logs import setup as setup_logging
from backend.migrate import SEALING_REVISION, upgrade
from backend.models import utcnow
from backend.services.accounts import ROLES, create_user
from backend.services.boundaries import (
    BoundaryFileError,
    BoundaryImport,
    import_boundaries,
    read_features,
)
from backend.services.categories import seed_categories
from backend.services.demo import DemoRefused, check_demo_database, seed_demo_accounts
from backend.services.media_store import (
    Copied,
    LocalStore,
    MediaUnavailable,
    S3Store,
    copy_store,
    media_store,
)
from backend.services.partners import issue_key
from backend.services.rekey import left, rotate
from backend.services.report_files import file_name, to_csv, to_xlsx
from backend.services.staff_groups import create_link_code
from backend.services.stats import (
    PERIOD_KINDS,
    PeriodKind,
    Report,
    Scope,
    StatsError,
    monthly_report,
    period_due,
    period_of,
    scope_for,
)
from backend.services.units import import_units
from backend.services.workflow import Actor
from backend.timeutil import local
from backend.web.admin import mount_admin
from backend.web.api import mount_api
from backend.web.app import SESSIONS, create_app
from backend.web.auth import session_middleware
from backend.web.dashboard import mount_dashboard
from backend.web.demo import mount_demo
from backend.web.login import mount_login
from backend.web.mutes import mount_mutes
from backend.web.open311 import mount_open311
from backend.web.openapi import mount_openapi
from backend.web.partners_admin import mount_partners_admin
from backend.web.privacy import mount_privacy
from backend.web.public import mount_public
from backend.web.public_map import mount_map
from backend.web.report_form import mount_report_form
from backend.web.security import JsonAccessLog, access_logger
from backend.web.stats import mount_stats
from bot.spool import SUFFIX as SPOOL_SUFFIX
from bot.standin import BotApiStandIn, DemoChats
from bot.web_form import WebChannel

log = logging.getLogger("hotline")


def build_app(settings: Settings) -> web.Application:
    """The whole service: web app plus chat runtime. Tests build it the same way."""
    from bot.runtime import mount_chat

    app = create_app(settings)
    app.middlewares.append(session_middleware)
    mount_dashboard(app)
    mount_login(app)
    mount_admin(app)
    mount_partners_admin(app)
    mount_privacy(app)
    mount_mutes(app)
    mount_api(app)
    mount_openapi(app)
    mount_stats(app)
    mount_public(app)
    mount_map(app)
    mount_open311(app)
    mount_chat(app)
    mount_report_form(app, WebChannel())
    return app


async def _freeze_heap(_app: web.Application) -> None:
    """Keep what startup built (modules, the ward index) out of later GC passes.

    A full collection over that heap stalls the loop for 60–100 ms, which every request
    in flight would wait out.
    """
    gc.collect()
    gc.freeze()


def _with_stand_in(settings: Settings) -> tuple[Settings, BotApiStandIn]:
    """Settings pointing Telegram at the built-in Bot API stand-in, and the stand-in (not
    started): the demo's chats then happen in the simulator."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stand_in = BotApiStandIn(token="100000:DEMO", port=port)  # noqa: S106 - its own token
    demo = settings.model_copy(
        update={
            "telegram_token": SecretStr(stand_in.token),
            "telegram_api_url": f"http://127.0.0.1:{port}",
            "telegram_mode": "polling",
            "telegram_poll_timeout": 1,
        }
    )
    return demo, stand_in


async def _seed_demo_staff(app: web.Application) -> None:
    """The demo's training accounts, printed at each start (the same passwords each time)."""
    async with app[SESSIONS]() as session, session.begin():
        accounts = await seed_demo_accounts(session)
    lines = [f"  {a.username:20} {a.password}   ({a.display_name})" for a in accounts]
    print("Demo staff accounts (log in at /login):", *lines, sep="\n")
    print("Chat as a resident at /demo/chat", flush=True)


def server_app(settings: Settings) -> web.Application:
    """The app `hotline serve` runs; with the demo switched on, its training accounts and
    the chat simulator on the built-in Bot API stand-in."""
    stand_in = None
    if settings.demo:  # never with a real channel: Settings refuses that
        settings, stand_in = _with_stand_in(settings)
    app = build_app(settings)
    if stand_in is not None:
        started = stand_in

        async def run_stand_in(_app: web.Application) -> AsyncIterator[None]:
            await started.start()
            yield
            await started.stop()

        # Before the chat runtime, which asks the stand-in who the bot is.
        app.cleanup_ctx.insert(0, run_stand_in)
        mount_demo(app, DemoChats(stand_in))
    if settings.demo:
        app.on_startup.append(_seed_demo_staff)
    return app


def run_server(settings: Settings, host: str, port: int, *, banner: bool = True) -> None:
    """Run the service until interrupted."""
    if settings.demo and not settings.public_url:
        # The demo is opened where it is served: its chat's case page links lead there.
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    app = server_app(settings)
    app.on_startup.append(_freeze_heap)
    web.run_app(
        app,
        host=host,
        port=port,
        print=print if banner else None,
        access_log_class=JsonAccessLog,
        access_log=access_logger(),
    )


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


async def migrate(settings: Settings) -> None:
    """Apply migrations and refresh the built-in reference data (categories)."""
    _ensure_sqlite_dir(settings.database_url)
    # The rows a migration seals (on an installation from before sealing) need the keys.
    install(settings.keyring())
    before = await schema_revision(settings)
    await asyncio.to_thread(upgrade, settings.database_url)
    if before is not None and before < SEALING_REVISION:
        # The tables held identities in the clear: rewrite them so that neither the old
        # column values nor the old row versions stay in the database files.
        await compact_sealed_tables(settings)
    await in_transaction(settings, seed_categories)


T = TypeVar("T")


async def in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one command's database work in a transaction on a short-lived engine."""
    engine = engine_for(settings)
    try:
        await open_keys(engine, settings)
        async with session_factory(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


async def _nothing(_session: AsyncSession) -> None:
    """No work: in_transaction's checks alone."""


async def load_units(settings: Settings) -> None:
    counts = await in_transaction(settings, import_units)
    log.info(
        "imported %d provinces, %d wards, %d handling units",
        counts.provinces,
        counts.wards,
        counts.units,
    )


async def add_user(settings: Settings, args: argparse.Namespace) -> None:
    created = await in_transaction(
        settings,
        lambda session: create_user(
            session,
            args.username,
            args.role,
            display_name=args.name,
            unit_code=args.unit,
            telegram_chat_id=args.telegram,
        ),
    )
    # The one-time password goes to the terminal of whoever created the account, once.
    print(f"user {created.user.username} ({created.user.role}) created")
    print(f"one-time password: {created.one_time_password}")


async def new_link_code(settings: Settings, unit_code: str) -> None:
    code = await in_transaction(settings, lambda session: create_link_code(session, unit_code))
    print(f"in the unit's Telegram group, type: /link {code}   (valid for 24 hours)")


async def new_partner_key(settings: Settings, province: str, name: str) -> None:
    issued = await in_transaction(
        settings, lambda session: issue_key(session, province, name, actor="cli")
    )
    print(f"Open311 api_key for {issued.name} (province {issued.province_code}):")
    print(issued.key)
    print("It is shown once: only its SHA-256 is kept. Revoke it on the admin page.")


async def load_boundaries(settings: Settings, path: Path, code_property: str) -> BoundaryImport:
    """Read a GeoJSON file of ward polygons and store them (the server loads them at start)."""
    features = read_features(path, code_property)
    result = await in_transaction(settings, lambda session: import_boundaries(session, features))
    print(f"{result.imported} ward boundaries imported from {path.name}")
    if result.repaired:
        print(f"{result.repaired} invalid polygons repaired (make_valid)")
    if result.unknown_codes:
        shown = ", ".join(result.unknown_codes[:10])
        print(f"{len(result.unknown_codes)} features skipped, not a ward code: {shown}")
    if result.not_polygons:
        shown = ", ".join(result.not_polygons[:10])
        print(f"{len(result.not_polygons)} features skipped, no polygon: {shown}")
    return result


async def make_report(settings: Settings, args: argparse.Namespace) -> Report:
    """`hotline report`: the monthly report for the period and scope asked for."""
    kind: PeriodKind = args.period or settings.stats_period
    today = local(utcnow()).date()
    period = period_of(args.month, kind) if args.month else period_due(today, kind)
    asked = Scope(args.province, args.ward, None, args.category)

    async def make(session: AsyncSession) -> Report:
        scope = await scope_for(session, Actor.system(), asked)
        return await monthly_report(session, period, scope)

    return await in_transaction(settings, make)


def save_report(report: Report, file_format: str, out: str | None) -> None:
    """Write the report as XLSX, CSV or JSON to a file (or standard output for '-')."""
    if file_format == "xlsx":
        body = to_xlsx(report)
    elif file_format == "csv":
        body = to_csv(report).encode()
    else:
        body = json.dumps(report.as_json(), ensure_ascii=False, indent=2).encode()
    if out == "-":
        sys.stdout.buffer.write(body)
        return
    path = Path(out or file_name(report, file_format))
    path.write_bytes(body)
    total = report.total
    print(f"{path}: {total.received} reports, {total.cases} cases, {report.period.label()}")
    if report.problems:
        print("totals check failed: " + "; ".join(report.problems), file=sys.stderr)


async def rotate_data_key(settings: Settings, batch: int) -> bool:
    """`hotline rotate-data-key`; returns whether every value is now under the new key."""
    engine = engine_for(settings)
    try:
        ring = await open_keys(engine, settings)
        print(f"sealing under key {ring.current_id}", flush=True)
        done = await rotate(
            engine,
            ring,
            batch=batch,
            progress=lambda name, n: print(f"{name}: {n}", flush=True),
        )
        for name, n in done.items():
            print(f"{name}: {n} sealed again", flush=True)
        remaining = await left(engine, ring)
    finally:
        await engine.dispose()
    for name, n in remaining.items():
        print(f"{name}: {n} still under an older key: run it again", file=sys.stderr)
    # Updates spooled on this machine while the database was slow stay under the key
    # that sealed them until a server stores them.
    spooled = sorted(settings.spool_dir.glob(f"*{SPOOL_SUFFIX}"))
    if spooled:
        print(
            f"{len(spooled)} spool file(s) in {settings.spool_dir} wait to be stored: keep "
            "HOTLINE_DATA_KEY_PREVIOUS until every machine's spool folder is empty",
            file=sys.stderr,
        )
    if not remaining and not spooled:
        print("every value is under the new key: HOTLINE_DATA_KEY_PREVIOUS may go", flush=True)
    return not remaining


async def migrate_media(settings: Settings, source_dir: Path | None) -> Copied:
    """`hotline migrate-media`: copy a local media folder into the configured bucket,
    skipping what is already there at the same size (so a second run resumes)."""
    target = media_store(settings)
    if not isinstance(target, S3Store):
        raise ValueError(
            "migrate-media copies into a bucket: set HOTLINE_MEDIA_URL=s3://bucket/prefix"
        )
    source = LocalStore(source_dir or settings.media_dir)
    if not source.root.is_dir():
        raise ValueError(f"no media folder at {source.root}")
    print(f"copying {source} to {target}", flush=True)
    await target.start()
    try:
        return await copy_store(source, target)
    finally:
        await target.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hotline", description="Pollution hotline service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the web service and the chat bots")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="training accounts and the chat simulator (a development database only)",
    )
    sub.add_parser("migrate", help="create or upgrade the database schema")
    sub.add_parser("import-units", help="load the 34 provinces and 3,321 wards")
    bounds = sub.add_parser("import-boundaries", help="load ward polygons from a GeoJSON file")
    bounds.add_argument("file", type=Path, help="a GeoJSON FeatureCollection of ward polygons")
    bounds.add_argument(
        "--code-property", default="code", help="the feature property with the 5-digit ward code"
    )
    new_user = sub.add_parser("create-user", help="a staff account; prints a one-time password")
    new_user.add_argument("username")
    new_user.add_argument("--role", required=True, choices=ROLES)
    new_user.add_argument("--unit", help="unit code: W<ward>, P<province>, C<province>, MOAE")
    new_user.add_argument("--name", help="display name")
    new_user.add_argument("--telegram", help="Telegram chat id for escalations and cards")
    partner = sub.add_parser("open311-key", help="an Open311 api_key for a partner; printed once")
    partner.add_argument("--province", required=True, help="province code, e.g. 38")
    partner.add_argument("--name", required=True, help="the partner system's name")
    link = sub.add_parser("link-code", help="a one-time code that links a group to a unit")
    link.add_argument("--unit", required=True, help="unit code, e.g. W14812")
    monthly = sub.add_parser("report", help="the monthly statistics report (XLSX, CSV, JSON)")
    monthly.add_argument("--month", help="yyyy-mm; default: the period whose report is due")
    monthly.add_argument(
        "--period", choices=PERIOD_KINDS, help="calendar month or the 25th cut (default: setting)"
    )
    monthly.add_argument("--province", help="2-digit province code")
    monthly.add_argument("--ward", help="5-digit ward code")
    monthly.add_argument("--category", help="category code, e.g. dumping")
    monthly.add_argument("--format", choices=("xlsx", "csv", "json"), default="xlsx")
    monthly.add_argument("--out", help="file to write ('-': standard output)")
    media = sub.add_parser(
        "migrate-media", help="copy the local photo folder into the S3 bucket (resumable)"
    )
    media.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="the folder to copy (default: HOTLINE_MEDIA_DIR)",
    )
    sub.add_parser("new-data-key", help="print a new random data key (for HOTLINE_DATA_KEY)")
    rotate_key = sub.add_parser(
        "rotate-data-key",
        help="seal every value again under HOTLINE_DATA_KEY (the old key in "
        "HOTLINE_DATA_KEY_PREVIOUS); runs beside the service, resumable",
    )
    rotate_key.add_argument("--batch", type=int, default=500, help="values per transaction")
    args = parser.parse_args(argv)
    if args.command == "new-data-key":
        print(new_key())
        return

    setup_logging()  # JSON lines with the request id (backend/logs.py)
    try:
        settings = Settings(demo=True) if getattr(args, "demo", False) else Settings()
    except ValidationError as exc:
        parser.error("; ".join(str(e["msg"]) for e in exc.errors()))
    try:
        _command(parser, args, settings)
    except DataKeyError as exc:
        parser.error(str(exc))


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "rotate-data-key":
        if not asyncio.run(rotate_data_key(settings, max(1, args.batch))):
            sys.exit(1)
    elif args.command == "serve":
        try:
            media_store(settings)
        except ValueError as exc:
            parser.error(str(exc))
        # The data key is checked against the database before anything listens.
        asyncio.run(in_transaction(settings, _nothing))
        if settings.demo:
            try:
                asyncio.run(in_transaction(settings, check_demo_database))
            except DemoRefused as exc:
                parser.error(str(exc))
        run_server(settings, args.host, args.port)
    elif args.command == "migrate":
        asyncio.run(migrate(settings))
        log.info("database is at the latest schema")
    elif args.command == "import-units":
        asyncio.run(load_units(settings))
    elif args.command == "import-boundaries":
        try:
            asyncio.run(load_boundaries(settings, args.file, args.code_property))
        except BoundaryFileError as exc:
            parser.error(str(exc))
    elif args.command == "open311-key":
        try:
            asyncio.run(new_partner_key(settings, args.province, args.name))
        except ValueError as exc:
            parser.error(str(exc))
    elif args.command == "link-code":
        try:
            asyncio.run(new_link_code(settings, args.unit))
        except ValueError as exc:
            parser.error(str(exc))
    elif args.command == "report":
        try:
            report = asyncio.run(make_report(settings, args))
        except StatsError as exc:
            parser.error(str(exc))
        save_report(report, args.format, args.out)
    elif args.command == "create-user":
        try:
            asyncio.run(add_user(settings, args))
        except ValueError as exc:
            parser.error(str(exc))
    elif args.command == "migrate-media":
        try:
            copied = asyncio.run(migrate_media(settings, args.source))
        except ValueError as exc:
            parser.error(str(exc))
        except MediaUnavailable as exc:
            print(f"the media store did not answer ({exc}): nothing copied", file=sys.stderr)
            sys.exit(1)
        print(f"copied {copied.copied}, skipped {copied.skipped}, failed {copied.failed}")
        if copied.left:
            print(
                f"stopped after {copied.failed} failures, {copied.left} not tried: "
                "run it again to resume",
                file=sys.stderr,
            )
        if copied.failed or copied.left:
            sys.exit(1)
