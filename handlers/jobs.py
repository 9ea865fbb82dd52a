"""The work a turn leaves for after its commit (see handlers.turn.Job), by kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.events import Incoming
from handlers.report import GEOCODE, REVERSE, look_up, reverse_look_up
from handlers.turn import Services

# The key of a stored job's body that names its kind.
JOB = "job"


def job_body(kind: str, update_id: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """A job as it is stored: its kind, the update id its outcome gets, its arguments."""
    return {JOB: kind, "update_id": update_id, "args": dict(args)}


async def run_job(
    services: Services, channel: str, chat_id: str, body: Mapping[str, Any]
) -> Incoming:
    """Do a stored job; its outcome is the event the chat's dialogue takes next. Raises
    when it could not be done (it is then tried again)."""
    kind, update_id, args = body[JOB], str(body["update_id"]), body["args"]
    if kind == GEOCODE:
        return await look_up(services, channel, chat_id, update_id, str(args["query"]))
    if kind == REVERSE:
        lat, lon = float(args["lat"]), float(args["lon"])
        return await reverse_look_up(services, channel, chat_id, update_id, lat, lon)
    raise ValueError(f"no such job: {kind}")
