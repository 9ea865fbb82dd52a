"""Log lines are JSON with the request id of their context, exceptions are kept as types
and frames without their text, and an outage is one line per component every few
seconds."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backend.logs import QUIET_LOGGERS, bound, json_handler, request_id, setup
from backend.services.quiet import Quiet


@contextmanager
def captured(name: str = "test.logs") -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    logger = logging.getLogger(name)
    handler = json_handler(out)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(logging.NOTSET)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_json_with_level_logger_message_time_and_request_id() -> None:
    with captured() as (logger, out):
        logger.info("outbox row %d sent on %s", 7, "telegram")
        with bound("a1b2c3d4e5f60718"):
            logger.warning("a %s update went to the spool", "zalo_oa")
        logger.info("after")
    first, second, third = lines(out)
    assert first["message"] == "outbox row 7 sent on telegram"
    assert first["level"] == "INFO" and first["logger"] == "test.logs"
    assert first["at"].endswith("+00:00") and "T" in first["at"]
    assert "request_id" not in first
    assert second["request_id"] == "a1b2c3d4e5f60718" and second["level"] == "WARNING"
    assert "request_id" not in third
    assert request_id.get() is None


async def test_each_task_logs_under_its_own_request_id() -> None:
    async def work(rid: str) -> None:
        request_id.set(rid)
        await asyncio.sleep(0)
        logging.getLogger("test.logs").info("handled")

    with captured() as (_, out):
        await asyncio.gather(work("1111"), work("2222"), work("3333"))
    assert sorted(x["request_id"] for x in lines(out)) == ["1111", "2222", "3333"]
    assert request_id.get() is None


def test_an_exception_is_its_type_causes_and_frames_without_its_text() -> None:
    def inner() -> None:
        raise ValueError("invalid literal for int(): '0912345678'")

    def outer() -> None:
        try:
            inner()
        except ValueError as exc:
            raise RuntimeError("Nguyễn Văn A at 12 Lê Lợi") from exc

    with captured() as (logger, out):
        try:
            outer()
        except RuntimeError:
            logger.exception("could not handle an update")
    (line,) = lines(out)
    assert line["message"] == "could not handle an update"
    assert line["error"] == "RuntimeError"
    assert line["caused_by"] == ["ValueError"]
    assert line["trace"][-1].endswith(" outer")
    assert all(":" in frame and not frame.startswith("/") for frame in line["trace"])
    text = out.getvalue()
    assert "0912345678" not in text and "Lê Lợi" not in text and text[-1] == "\n"
    assert text.count("\n") == 1


def test_an_outage_is_one_line_per_component_every_few_seconds() -> None:
    clock = [0.0]
    quiet = Quiet("outbox", interval=5.0, clock=lambda: clock[0])
    with captured("hotline.failures") as (_, out):
        for _ in range(200):  # 200 sends fail within a second
            quiet.failed(ConnectionRefusedError("connect to 10.0.0.7 refused"))
            clock[0] += 0.004
        clock[0] = 5.0
        quiet.failed(ConnectionRefusedError())
        quiet.recovered()
    first, still, again = lines(out)
    assert first["message"] == "outbox failed" and first["error"] == "ConnectionRefusedError"
    assert still["message"].startswith("outbox still failing: 200 more failure(s)")
    assert "error" not in still
    assert again["message"] == "outbox works again"
    assert "10.0.0.7" not in out.getvalue()


def test_setup_makes_every_logger_write_json() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        setup(stream=out)
        logging.getLogger("hotline").info("database is at the latest schema")
        logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot…")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert [x["message"] for x in lines(out)] == ["database is at the latest schema"]
