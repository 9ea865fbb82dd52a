"""Background tasks of the chat runtime: stopping one and waiting until it has stopped."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel task (if any) and wait for it to finish, whatever it raises."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
