"""What a run of the scale-out test did, counted from the database, the stand-ins'
records, the platform's deliveries and the processes' logs; and what is wrong with it.

Every figure goes into `counts` (printed whether the test passes or fails); every broken
promise into `problems`, with enough detail to start looking.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backend.crypto import keys
from tests.scaleout.cluster import DEADLOCK, cpu_seconds
from tests.scaleout.platform import ZALO_PATIENCE
from tests.scaleout.residents import CODE, reads, transcript
from tests.scaleout.scene import Scene
from tests.scaleout.standins import Mailboxes, Received


@dataclass
class LogFacts:
    """What the logs say, read off the loop: 'deadlock' lines, tracebacks printed as
    text, each error's wall-clock time and message, when a process took the Telegram
    sender's duty, and PostgreSQL's lines about this run's database."""

    deadlocks: int = 0
    plain: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)
    duty_taken: list[float] = field(default_factory=list)
    postgres: list[str] = field(default_factory=list)


def read_logs(scene: Scene) -> LogFacts:
    facts = LogFacts()
    for server in scene.cluster.servers:
        text = server.log_text()
        facts.deadlocks += len(DEADLOCK.findall(text))
        for line in text.splitlines():
            if not line.startswith("{"):
                facts.plain += line.startswith("Traceback (most recent call last)")
                continue
            duty = "now holds the duty outbox:telegram" in line
            marks = ('"level": "ERROR"', '"level": "CRITICAL"', '"trace": [')
            if not duty and not any(mark in line for mark in marks):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            wall = datetime.fromisoformat(record["at"]).timestamp()
            if duty:
                facts.duty_taken.append(wall)
            else:
                facts.errors.append((wall, str(record.get("message"))[:160]))
    mine = False
    for line in scene.pg.log_text().splitlines():
        # A message's further lines (a deadlock's processes and queries) are indented.
        if not line.startswith("\t"):
            mine = f" {scene.database} " in line
        if mine:
            facts.postgres.append(line)
    (scene.workdir / "postgresql.log").write_text("\n".join(facts.postgres), encoding="utf-8")
    return facts


# A send can be recorded only once the platform answers: a process killed in between
# leaves it to be sent again by the next sender (the documented window).
WINDOW = "documented window (in flight at a kill)"
# How long a request may be on its way, on a busy machine.
IN_FLIGHT = 0.5


def busiest_second(times: list[float], seconds: float = 1.0) -> tuple[int, float]:
    """The most events in any window of `seconds` (sliding), and when it began."""
    times = sorted(times)
    most, start, began = 0, 0, 0.0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        if end - start + 1 > most:
            most, began = end - start + 1, times[start]
    return most, began


def most_in_a_second(times: list[float]) -> int:
    return busiest_second(times)[0]


def what_was_read(expected: list[str], got: list[Received[Any]]) -> str:
    """A chat's messages beside what its resident expected to read."""
    texts = [(r.item.text or "")[:60] for r in got]
    return f"expected {expected}, read {len(got)} messages: {texts}"


@dataclass
class Tally:
    scene: Scene
    kills: list[float] = field(default_factory=list)
    # Seconds from the load's start between which errors in the logs are expected.
    tolerate: tuple[float, float] | None = None
    # What the checks learn on the way: each chat's ticket codes, repeats per chat, and
    # the shortest time between two messages to one Telegram chat (allowing for how late
    # this process's loop stamped them).
    tickets: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    shortest_gap: float = 99.0
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def in_window(self, first: float, again: float) -> bool:
        """Whether a kill fell between a send and its repeat: the first may reach the
        platform (and be stamped here) a little after the sender died, as it was on
        its way; and later still if this process's loop was late."""
        slack = IN_FLIGHT + self.late_between(first - 1.0, first)
        return any(first - slack <= kill <= again for kill in self.kills)

    # --- the whole tally ------------------------------------------------------------------

    async def take(self) -> Tally:
        self.cpu()
        self.health()
        self.deliveries()
        await self.slowest()
        await self.database()
        self.chats()
        self.buttons()
        self.rates()
        await self.photos()
        facts = await asyncio.to_thread(read_logs, self.scene)
        self.logs(facts)
        self.postgres_log(facts.postgres)
        return self

    # --- what the platform handed over ----------------------------------------------------

    def deliveries(self) -> None:
        platform = self.scene.platform
        for channel in ("telegram", "zalo_oa"):
            mine = [d for d in platform.deliveries if d.channel == channel]
            outcomes = platform.outcomes(channel)
            self.counts[f"{channel} updates posted"] = len(mine)
            self.counts[f"{channel} updates acknowledged (200)"] = sum(d.acked for d in mine)
            self.counts[f"{channel} updates posted more than once"] = sum(
                len(d.attempts) > 1 for d in mine
            )
            self.counts[f"{channel} answers by outcome"] = dict(sorted(outcomes.items()))
            slowest = max((t for d in mine for _, o, _, t in d.attempts if o == "200"), default=0.0)
            self.counts[f"{channel} slowest 200 (s)"] = round(slowest, 2)
            if channel == "zalo_oa":
                late = sum(
                    1 for d in mine for _, o, _, t in d.attempts if o == "200" and t > ZALO_PATIENCE
                )
                self.counts[f"zalo_oa 200s later than Zalo waits ({ZALO_PATIENCE:g} s)"] = late
            refused = {o: n for o, n in outcomes.items() if o.startswith("4")}
            if refused:
                self.problem(f"{channel}: webhooks refused updates with {refused}")
        stuck = [r for r in self.scene.residents if not r.finished]
        took = sorted(r.took for r in self.scene.residents if r.took is not None)
        if took:
            self.counts["seconds a report took (median, slowest)"] = (
                f"{took[len(took) // 2]:.1f}, {took[-1]:.1f}"
            )
        self.counts["residents"] = len(self.scene.residents)
        self.counts["residents who finished their report"] = len(self.scene.residents) - len(stuck)
        for r in stuck[:10]:
            read = [(t or "")[:40] for t in r.texts()]
            self.problem(f"resident {r.channel}:{r.chat_id} stuck: {r.stuck}; it read {read}")

    async def slowest(self, shown: int = 3) -> None:
        """The slowest steps, and what the database says of those chats and of the stuck
        ones: when each update came and was handled, each reply made and sent."""
        steps = sorted(
            ((took, key, r) for r in self.scene.residents for key, took in r.steps),
            key=lambda s: -s[0],
        )
        for n, (took, key, r) in enumerate(steps[:shown], 1):
            self.counts[f"slowest step #{n}"] = f"{took:.1f} s for {key} ({r.channel}:{r.chat_id})"
        chats = [r for r in self.scene.residents if not r.finished][:5]
        chats += [r for _, _, r in steps[:shown] if r not in chats]
        lines: list[str] = []
        for r in chats:
            lines.append(f"== {r.channel}:{r.chat_id} (stuck: {r.stuck})")
            for row in await self.scene.query(
                "SELECT id, event_key, received_at, handled_at, lease_owner FROM inbound_events"
                " WHERE channel = $1 AND chat_key = $2 ORDER BY id",
                r.channel,
                keys().chat_key(r.channel, r.chat_id),
            ):
                lines.append(f"  in  {dict(row)}")
            for row in await self.scene.query(
                "SELECT id, created_at, sent_at, status, attempts, lease_owner, last_error"
                " FROM outbox WHERE channel = $1 AND chat_key = $2 ORDER BY id",
                r.channel,
                keys().chat_key(r.channel, r.chat_id),
            ):
                lines.append(f"  out {dict(row)}")
        (self.scene.workdir / "slow-chats.txt").write_text("\n".join(lines), encoding="utf-8")

    # --- the database ---------------------------------------------------------------------

    async def database(self) -> None:
        scene = self.scene
        rows = await scene.query(
            "SELECT channel, event_key, handled_at IS NOT NULL AS handled,"
            " extract(epoch FROM handled_at - received_at) AS waited FROM inbound_events"
        )
        waited = sorted(float(r["waited"]) for r in rows if r["waited"])
        if waited:
            self.counts["updates handled after they were stored (n; median, max s)"] = (
                f"{len(waited)}; {waited[len(waited) // 2]:.1f}, {waited[-1]:.1f}"
            )
        stored = {(r["channel"], r["event_key"]): r["handled"] for r in rows}
        self.counts["inbound_events rows"] = len(rows)
        self.counts["inbound_events not handled"] = sum(not h for h in stored.values())
        acked = {(d.channel, d.key) for d in scene.platform.deliveries if d.acked}
        lost = sorted(acked - set(stored))
        self.counts["acknowledged updates not stored (200-and-lost)"] = len(lost)
        if lost:
            self.problem(f"{len(lost)} updates answered 200 were never stored: {lost[:10]}")
        unhandled = sorted(k for k, handled in stored.items() if not handled)
        if unhandled:
            self.problem(f"{len(unhandled)} stored updates never handled: {unhandled[:10]}")

        tickets = await scene.query(
            "SELECT t.code, i.channel, i.chat_key,"
            " (SELECT count(*) FROM photos p WHERE p.ticket_id = t.id) AS photos"
            " FROM tickets t LEFT JOIN reporter_identities i ON i.reporter_id = t.reporter_id"
        )
        # Chats are stored under their keyed look-up (backend.crypto).
        named = {
            (r.channel, keys().chat_key(r.channel, r.chat_id)): r.chat_id for r in scene.residents
        }
        per_chat: dict[tuple[str, str], list[str]] = {}
        for t in tickets:
            chat = named.get((t["channel"], t["chat_key"]), f"key {t['chat_key']}")
            per_chat.setdefault((t["channel"], chat), []).append(t["code"])
        self.tickets = per_chat
        self.counts["tickets"] = len(tickets)
        twice = {chat: codes for chat, codes in per_chat.items() if len(codes) > 1}
        self.counts["chats with more than one ticket"] = len(twice)
        if twice:
            self.problem(f"duplicate tickets: {dict(itertools.islice(twice.items(), 10))}")
        ours = {(r.channel, r.chat_id) for r in scene.residents}
        strangers = sorted(set(per_chat) - ours)
        if strangers:
            self.problem(f"tickets of chats no resident used: {strangers[:10]}")
        for r in scene.residents:
            held = per_chat.get((r.channel, r.chat_id), [])
            if r.finished and len(held) != 1:
                self.problem(f"{r.channel}:{r.chat_id} finished with tickets {held}")
        no_photo = [t["code"] for t in tickets if t["photos"] != 1]
        self.counts["tickets without exactly one photo"] = len(no_photo)
        if no_photo:
            self.problem(f"tickets without exactly one photo: {no_photo[:10]}")

        outbox = await scene.query(
            "SELECT channel, status, count(*) AS n FROM outbox GROUP BY channel, status"
        )
        by_status = {f"{r['channel']} {r['status']}": r["n"] for r in outbox}
        self.counts["outbox rows by channel and status"] = by_status
        for key, n in by_status.items():
            if not key.endswith(" sent"):
                self.problem(f"outbox: {n} rows {key.split()[1]} on {key.split()[0]}")

    # --- each chat ------------------------------------------------------------------------

    def chats(self) -> None:
        duplicates: Counter[str] = Counter()
        outside = 0
        # (seconds between two messages to a chat, the same allowing for how late this
        # process stamped the first, the chat)
        gaps: dict[str, list[tuple[float, float, str]]] = {"telegram": [], "zalo_oa": []}
        for r in self.scene.residents:
            box: Mailboxes[Any] = (
                self.scene.telegram.messages
                if r.channel == "telegram"
                else self.scene.zalo.messages
            )
            raw = box.chats.get(r.chat_id, [])
            got = box.distinct(r.chat_id)
            if r.finished and not reads(r.expected, got):
                wrong = what_was_read(r.expected, got)
                self.problem(f"{r.channel}:{r.chat_id} read out of order or wrong: {wrong}")
            gaps[r.channel] += [
                # The first may have been stamped late by as much as the loop was.
                (b.at - a.at, b.at - a.at + self.late_between(a.at - 0.5, a.at), r.chat_id)
                for a, b in itertools.pairwise(raw)
            ]
            first: dict[Hashable, Received[Any]] = {}
            for got_one in raw:
                before = first.setdefault(got_one.identity, got_one)
                if before is got_one:
                    continue
                duplicates[f"{r.channel}:{r.chat_id}"] += 1
                if not self.in_window(before.at, got_one.at):
                    outside += 1
                    self.problem(
                        f"{r.channel}:{r.chat_id} got {(got_one.item.text or '')[:50]!r} again,"
                        f" {got_one.at - before.at:.2f} s later, no kill in between"
                    )
            if r.finished:
                codes = CODE.findall(transcript(got))
                tickets = self.tickets.get((r.channel, r.chat_id), [])
                if codes != tickets:
                    self.problem(
                        f"{r.channel}:{r.chat_id} was told ticket {codes}, holds {tickets}"
                    )
        (self.scene.workdir / "chats.json").write_text(
            json.dumps(
                {
                    chat: [
                        (round(r.at - self.scene.marks["load"], 3), (r.item.text or "")[:40])
                        for r in received
                    ]
                    for box in (self.scene.telegram.messages, self.scene.zalo.messages)
                    for chat, received in box.chats.items()
                },
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
        self.counts["messages sent twice (all chats)"] = sum(duplicates.values())
        self.counts[f"  of which in the {WINDOW}"] = sum(duplicates.values()) - outside
        self.counts["chats with a message sent twice"] = len(duplicates)
        self.counts["most repeats in one chat"] = max(duplicates.values(), default=0)
        for channel, between in gaps.items():
            gap, _, chat = min(between, default=(99.0, 99.0, ""))
            self.counts[f"{channel}: shortest gap between two messages to a chat (s)"] = (
                f"{gap:.3f} ({chat})"
            )
        self.shortest_gap = min((g for _, g, _ in gaps["telegram"]), default=99.0)
        self.counts["telegram: the same, allowing for this process's lateness (s)"] = round(
            self.shortest_gap, 3
        )
        over = [c for c, n in duplicates.items() if n > 1]
        if over:
            self.problem(f"chats that got more than one message twice: {over[:10]}")
        self.duplicates = duplicates

    def buttons(self) -> None:
        acks = self.scene.telegram.acks
        pressed = [c for r in self.scene.residents for c in r.callbacks]
        unanswered = [c for c in pressed if not acks.get(c)]
        twice = [c for c in pressed if len(acks.get(c, [])) > 1]
        outside = [c for c in twice if not self.in_window(acks[c][0], acks[c][-1])]
        self.counts["button presses"] = len(pressed)
        self.counts["button presses answered twice"] = len(twice)
        self.counts["button presses never answered"] = len(unanswered)
        if unanswered:
            self.problem(f"button presses never answered: {unanswered[:10]}")
        if outside:
            self.problem(f"button presses answered twice with no kill between: {outside[:10]}")

    # --- the platforms' limits ------------------------------------------------------------

    def rates(self) -> None:
        served = self.scene.telegram.served
        load = self.scene.marks.get("load", 0.0)
        calls = [(round(t - load, 4), m) for t, m in served]
        (self.scene.workdir / "telegram-calls.json").write_text(json.dumps(calls))
        messages = [t for t, m in served if m != "answerCallbackQuery"]
        self.counts["telegram calls served (messages and button answers)"] = len(served)
        most, at = busiest_second([t for t, _ in served])
        self.counts["telegram most calls in one second"] = most
        self.counts["  that second began at (s from the load's start)"] = round(at - load, 1)
        self.counts["  this test process's loop was late then by (s)"] = round(
            self.late_between(at - 0.5, at + 1.0), 3
        )
        self.counts["telegram most calls in five seconds"] = busiest_second(
            [t for t, _ in served], 5.0
        )[0]
        self.counts["telegram most messages in one second"] = most_in_a_second(messages)
        zalo = [r.at for r in self.scene.zalo.messages.all()]
        self.counts["zalo messages sent"] = len(zalo)
        self.counts["zalo most messages in one second"] = most_in_a_second(zalo)
        if self.scene.telegram.retry_afters:
            self.counts["telegram calls served while a retry_after was running"] = (
                self.ignored_retry_afters()
            )
        if self.kills:
            after = [t for t, _ in served if t > self.kills[0]]
            resumed = (min(after) - self.kills[0]) if after else None
            self.counts["telegram: seconds from the kill to the next send"] = (
                round(resumed, 2) if resumed is not None else "never"
            )

    def late_between(self, first: float, last: float) -> float:
        """How late this process's loop woke at worst between two times: the stand-ins
        here stamp each call when the loop gets to it, so calls that came while it was
        late carry times bunched together."""
        lag = self.scene.lag  # in time order
        i = bisect.bisect_left(lag, (first, -1.0))
        j = bisect.bisect_right(lag, (last, math.inf))
        return max((x for _, x in lag[i:j]), default=0.0)

    def ignored_retry_afters(self, in_flight: float = 0.2) -> int:
        """Calls that reached Telegram after it had answered 429 and before the
        retry_after it gave had run out (but for those already on their way)."""
        times = sorted(t for t, _ in self.scene.telegram.served)
        inside: set[int] = set()
        for refused, wait in self.scene.telegram.retry_afters:
            i = bisect.bisect_left(times, refused + in_flight)
            j = bisect.bisect_left(times, refused + wait)
            inside.update(range(i, j))
        return len(inside)

    def over_the_limit(self, per_second: int, edge: int) -> list[str]:
        """One-second windows with more Telegram calls than per_second + edge, beyond
        what this process's lateness can have bunched into them (per_second a second)."""
        times = sorted(t for t, _ in self.scene.telegram.served)
        load = self.scene.marks.get("load", 0.0)
        worst: dict[int, tuple[int, str]] = {}  # by the second the window began in
        start = 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            count = end - start + 1
            if count <= per_second + edge:
                continue
            late = self.late_between(times[start] - 0.5, t)
            second = int(times[start] - load)
            if count <= per_second + edge + math.ceil(per_second * late):
                continue
            if count > worst.get(second, (0, ""))[0]:
                began = times[start] - load
                worst[second] = (count, f"{count} from {began:.1f} s (loop late {late:.3f} s)")
        return [text for _, (_, text) in sorted(worst.items())]

    # --- the photo store ------------------------------------------------------------------

    async def photos(self) -> None:
        shas = {r["sha256"] for r in await self.scene.query("SELECT DISTINCT sha256 FROM photos")}
        keys = await self.scene.stored_photos()
        missing = sorted(s for s in shas if f"{s[:2]}/{s}.jpg" not in keys)
        self.counts["photos in the database / objects in the bucket"] = f"{len(shas)} / {len(keys)}"
        if missing:
            self.problem(f"{len(missing)} photos not in the S3 bucket: {missing[:5]}")

    # --- the machine ----------------------------------------------------------------------

    def cpu(self) -> None:
        """CPU seconds each part used (what the run cost the machine)."""
        servers = [round(s.cpu_seconds(), 1) for s in self.scene.cluster.servers]
        pg = self.scene.pg.pid()
        self.counts["CPU seconds: servers (live processes)"] = servers
        self.counts["CPU seconds: PostgreSQL"] = round(cpu_seconds(pg), 1) if pg else "?"
        # The test process drives every run at once: its figure is for all of them.
        self.counts["CPU seconds: this test process (all runs so far)"] = round(
            time.process_time(), 1
        )

    def health(self) -> None:
        self.counts["each process's first photo, before the load (s)"] = {
            name: round(took, 1) for name, took in self.scene.warm.items()
        }
        load = self.scene.marks.get("load", 0.0)
        late = [(round(t - load, 3), round(x, 3)) for t, x in self.scene.lag if x > 0.02]
        (self.scene.workdir / "test-loop-late.json").write_text(json.dumps(late))
        lags = sorted(late for _, late in self.scene.lag)
        if lags:
            p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
            self.counts["this test process's loop late by (s: p99, max)"] = (
                f"{p99:.3f}, {lags[-1]:.3f}"
            )
        self.counts["oldest beat seen of a live process (s)"] = {
            name: round(age, 1) for name, age in sorted(self.scene.beat_age.items())
        }
        for name, took in sorted(self.scene.health.items()):
            took = sorted(took)
            p99 = took[min(len(took) - 1, int(0.99 * len(took)))]
            self.counts[f"{name} /healthz seconds (median, p99, max)"] = (
                f"{took[len(took) // 2]:.3f}, {p99:.3f}, {took[-1]:.3f}"
            )

    def since_load(self, wall: float) -> float:
        """A wall-clock time as seconds from the load's start."""
        return wall - self.scene.wall - self.scene.marks.get("load", 0.0)

    # --- logs -----------------------------------------------------------------------------

    def logs(self, facts: LogFacts) -> None:
        """The processes' logs: no deadlock, no traceback, no error (but, where the run
        breaks the database on purpose, while it is down and just after)."""
        errors, tolerated = Counter[str](), 0
        for wall, message in facts.errors:
            at = self.since_load(wall)
            if self.tolerate is not None and self.tolerate[0] <= at <= self.tolerate[1]:
                tolerated += 1
            else:
                errors[message] += 1
        self.counts["log lines with 'deadlock'"] = facts.deadlocks
        self.counts["tracebacks printed outside the JSON log"] = facts.plain
        self.counts["errors logged"] = sum(errors.values())
        for message, n in errors.most_common(5):
            self.counts[f"  error x{n}"] = message
        if self.tolerate is not None:
            self.counts["errors logged while the database was down (or just after)"] = tolerated
        if facts.deadlocks:
            self.problem(f"'deadlock' in the logs {facts.deadlocks} times")
        if facts.plain or errors:
            self.problem(f"{facts.plain + sum(errors.values())} errors or tracebacks in the logs")
        taken = sorted(self.since_load(wall) for wall in facts.duty_taken)
        self.counts["outbox:telegram taken by a process at (s from the load's start)"] = [
            round(t, 1) for t in taken
        ]
        # Once at the start, and once after each process that held it died.
        if len(taken) > 1 + len(self.kills):
            self.problem(
                f"the Telegram sender's duty changed hands {len(taken) - 1} times with"
                f" {len(self.kills)} kill(s): a live process was counted dead"
            )

    def postgres_log(self, mine: list[str]) -> None:
        """PostgreSQL's own account of this run's database: deadlocks, lock waits over a
        second, statements over a second."""
        deadlocks = [line for line in mine if "deadlock detected" in line]
        waits = [line for line in mine if "still waiting for" in line]
        slow = [line for line in mine if "duration: " in line]
        self.counts["PostgreSQL: deadlocks detected"] = len(deadlocks)
        self.counts["PostgreSQL: lock waits over 1 s"] = len(waits)
        self.counts["PostgreSQL: statements over 1 s"] = len(slow)
        for n, line in enumerate(waits[:3], 1):
            self.counts[f"  wait #{n}"] = line.split(" LOG:  ", 1)[-1][:200]
        for n, line in enumerate(slow[:3], 1):
            self.counts[f"  slow #{n}"] = line.split(" LOG:  ", 1)[-1][:200]
        if deadlocks:
            self.problem(f"PostgreSQL detected {len(deadlocks)} deadlocks: {deadlocks[0][:200]}")

    # --- reading ----------------------------------------------------------------------------

    def report(self, log_lines: int = 25) -> str:
        lines = [f"== scale-out run {self.scene.name!r}"]
        lines += [
            f"  {k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v}"
            for k, v in self.counts.items()
        ]
        began = self.scene.marks.get("load", 0.0)
        lines.append(
            "  timeline (s from the load's start): "
            + ", ".join(f"{k} {v - began:.1f}" for k, v in self.scene.marks.items())
        )
        if self.problems:
            lines.append(f"== {len(self.problems)} problems")
            lines += [f"  - {p}" for p in self.problems[:40]]
            lines.append(self.scene.cluster.tails(log_lines))
        return "\n".join(lines)
