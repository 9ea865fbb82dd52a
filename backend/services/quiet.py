"""One log line per failing component every few seconds, not a traceback per update.

During an outage every update, send and beat fails the same way. A component logs its
first failure with the traceback, then at most one line per INTERVAL saying how many
failed since, and one line when it works again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("hotline.failures")

INTERVAL = 5.0


class Quiet:
    """The failure log of one component."""

    def __init__(
        self,
        component: str,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.component = component
        self._interval = interval
        self._clock = clock
        self._failing = False
        self._last_line = 0.0
        self._unsaid = 0

    @property
    def failing(self) -> bool:
        return self._failing

    def failed(self, exc: BaseException, what: str = "failed") -> None:
        now = self._clock()
        if not self._failing:
            self._failing = True
            self._last_line = now
            self._unsaid = 0
            log.error("%s %s", self.component, what, exc_info=exc)
            return
        self._unsaid += 1
        if now - self._last_line >= self._interval:
            log.error(
                "%s still failing: %d more failure(s) in %.0f s, the last %s",
                self.component,
                self._unsaid,
                now - self._last_line,
                type(exc).__name__,
            )
            self._last_line = now
            self._unsaid = 0

    def recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("%s works again", self.component)
