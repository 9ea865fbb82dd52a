"""Three `hotline serve` processes on one PostgreSQL, with photos in S3 (moto), take whole
reports from residents on Telegram (webhooks spread over the three, posted again until
answered 200) and on the Zalo OA: while one process is killed with -9 and started again,
while PostgreSQL crashes and comes back, and while Telegram answers with a storm of 429s
and then 500s. Afterwards every acknowledged update took effect once, each resident has
one ticket and read every reply once and in order (but for the documented window of a
kill), Telegram's limits held, and no log speaks of a deadlock or a traceback.

The three runs go side by side (each its own database and processes; the PostgreSQL run
its own server): the outbox's limits, not the machine, set their pace, and one after the
other they would take twice as long. PostgreSQL only: several processes need it.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tests.fakes.s3 import MotoS3
from tests.scaleout.checks import Tally
from tests.scaleout.cluster import free_port
from tests.scaleout.postgres import OwnPostgres
from tests.scaleout.scene import BUCKET, Scene, scene
from tests.scaleout.standins import storm

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("HOTLINE_TEST_DATABASE_URL"),
        reason="scale-out runs on PostgreSQL only (HOTLINE_TEST_DATABASE_URL is not set)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

TEMPLATE = "scaleout_template"
# Telegram asks for at most 30 calls a second from a bot, and 1 message a second per chat.
TELEGRAM_GLOBAL = 30
# Sends spaced as asked reach the stand-in some tens of ms more or less apart (the way
# from the sender's clock to the stand-in's, on a busy machine): a one-second window may
# catch a few more, and two messages to a chat come that much less than a second apart.
EDGE = 3
CHAT_GAP = 0.9
# Replies go on within this long after a process dies (beats every 2 s, dead after 6 s,
# a takeover once the new owner has been steady for 6 s), or after PostgreSQL is back.
RESUME_WITHIN = 10.0
# Calls one Telegram resident's report makes (messages and button answers).
TELEGRAM_CALLS = 22
OUTAGE = 5.0
# What failed during an outage is logged when it fails, and once more when it recovers.
AFTER_OUTAGE = 10.0


# --- the three runs ------------------------------------------------------------------------


async def killed(run: Scene) -> Tally:
    """200 residents; the process sending Telegram's replies is killed with -9 half-way
    through, and started again a second later."""
    # Telegram's 30 calls a second and the OA's 10 set the pace: both take about as long.
    run.add_residents(telegram=135, zalo=65)

    async def kill_the_sender() -> None:
        await run.sent_at_least(135 * TELEGRAM_CALLS // 2)
        victim = await run.duty_holder("outbox:telegram")
        victim.kill()
        run.mark(f"kill -9 {victim.name}")
        await victim.wait_dead()
        await asyncio.sleep(1.0)
        await victim.start()
        await victim.ready()
        run.mark(f"{victim.name} ready again")

    await run.run(kill_the_sender)
    kills = [k for s in run.cluster.servers for k in s.kills]
    tally = await Tally(run, kills=kills).take()
    resumed = tally.counts.get("telegram: seconds from the kill to the next send")
    if not isinstance(resumed, float) or resumed > RESUME_WITHIN:
        tally.problem(f"replies resumed {resumed} s after the kill")
    return tally


async def postgres_restart(run: Scene) -> Tally:
    """Residents on both channels; PostgreSQL crashes (immediate stop) a third of the way
    through and is started again OUTAGE seconds later, and more residents come meanwhile
    (the others wait for answers the outbox cannot give). The processes are left alone."""
    run.add_residents(telegram=20, zalo=6)

    async def restart() -> None:
        await run.sent_at_least(20 * TELEGRAM_CALLS // 3)
        run.mark("PostgreSQL crashed")
        await asyncio.to_thread(run.pg.crash)
        run.arrive(telegram=4, zalo=2)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(run.pg.start_again)
        run.mark("PostgreSQL up")

    await run.run(restart)
    down, up = run.marks["PostgreSQL crashed"], run.marks["PostgreSQL up"]
    load = run.marks["load"]
    tally = await Tally(run, tolerate=(down - load, up - load + AFTER_OUTAGE)).take()
    # What the webhooks answered to updates posted from the crash to the return (an
    # answer may come after the return: a store waits up to 10 s for the database).
    during: dict[str, Counter[str]] = {"telegram": Counter(), "zalo_oa": Counter()}
    for d in run.platform.deliveries:
        for _, outcome, began, _ in d.attempts:
            if down <= began < up:
                during[d.channel][outcome] += 1
    tally.counts["telegram: answers to updates posted while PostgreSQL was down"] = dict(
        during["telegram"]
    )
    tally.counts["zalo_oa: answers to updates posted while PostgreSQL was down"] = dict(
        during["zalo_oa"]
    )
    if not any(o.startswith("5") for o in during["telegram"]):
        tally.problem("no Telegram webhook answered 5xx while PostgreSQL was down")
    after = [t for t, _ in run.telegram.served if t > up]
    resumed = round(min(after) - up, 2) if after else None
    tally.counts["telegram: seconds from PostgreSQL's return to the next send"] = resumed
    if resumed is None or resumed > RESUME_WITHIN:
        tally.problem(f"replies resumed {resumed} s after PostgreSQL came back")
    for server in run.cluster.servers:
        if server.starts != 1 or server.proc is None or server.proc.returncode is not None:
            tally.problem(f"{server.name} did not live through the outage")
    return tally


async def storm_run(run: Scene) -> Tally:
    """Telegram residents; for 20 s Telegram answers half the calls 429 (retry_after 3),
    then for 10 s half of them 500."""
    run.add_residents(telegram=24, zalo=0)

    async def weather() -> None:
        await run.sent_at_least(24 * TELEGRAM_CALLS // 5)
        began = run.mark("429 storm")
        run.telegram.fault = storm(began, retry_phase=20.0, error_phase=10.0)
        await asyncio.sleep(20.0)
        run.mark("500s")
        await asyncio.sleep(10.0)
        run.mark("calm")

    await run.run(weather)
    tally = await Tally(run).take()
    refused = dict(run.telegram.refused)
    tally.counts["telegram calls refused"] = refused
    for status in ("429", "500"):
        if not any(key.endswith(status) for key in refused):
            tally.problem(f"the storm refused no call with {status}")
    return tally


Run = Callable[[Scene], Awaitable[Tally]]
RUNS: dict[str, tuple[str, Run]] = {
    "test_a_process_killed_mid_load": ("killed", killed),
    "test_postgresql_restarted_mid_load": ("postgres", postgres_restart),
    "test_a_storm_of_429s_then_500s": ("storm", storm_run),
}
# The run that crashes its PostgreSQL has a server of its own.
OWN_SERVER = "postgres"


def check_limits(tally: Tally) -> None:
    over = tally.over_the_limit(TELEGRAM_GLOBAL, EDGE)
    if over:
        tally.problem(f"Telegram got more than {TELEGRAM_GLOBAL} calls a second: {over[:5]}")
    most = tally.counts["telegram most calls in five seconds"]
    if most > TELEGRAM_GLOBAL * 5 + EDGE:
        tally.problem(f"Telegram got {most} calls in five seconds")
    if tally.shortest_gap < CHAT_GAP:
        tally.problem(f"a Telegram chat got two messages {tally.shortest_gap:.3f} s apart")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, asyncio.Task[Tally]]]:
    """The selected runs, started together; each test waits for its own."""
    selected = [item.name for item in request.session.items if item.name in RUNS]
    names = [RUNS[test][0] for test in selected]
    servers: dict[str, OwnPostgres] = {}
    if any(name != OWN_SERVER for name in names):
        servers["shared"] = OwnPostgres(free_port())
    if OWN_SERVER in names:
        servers[OWN_SERVER] = OwnPostgres(free_port())
    s3 = MotoS3()
    tasks: dict[str, asyncio.Task[Tally]] = {}
    # The stand-ins in this process stamp each call when its loop gets to it: keep the
    # test session's heap out of the collector's passes, which would hold the loop up.
    gc.collect()
    gc.freeze()
    try:
        await asyncio.gather(
            asyncio.to_thread(s3.start), *(asyncio.to_thread(pg.start) for pg in servers.values())
        )
        await asyncio.to_thread(s3.create_bucket, BUCKET)
        took = await asyncio.gather(*(pg.build_template(TEMPLATE) for pg in servers.values()))
        print("template databases built in " + ", ".join(f"{t:.1f} s" for t in took))

        async def go(name: str, body: Run) -> Tally:
            pg = servers.get(name, servers.get("shared"))
            assert pg is not None
            async with scene(name, pg, TEMPLATE, s3, tmp_path_factory.mktemp(name)) as s:
                tally = await body(s)
            check_limits(tally)
            return tally

        for test in selected:
            name, body = RUNS[test]
            tasks[test] = asyncio.create_task(go(name, body), name=name)
        yield tasks
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await asyncio.to_thread(s3.stop)
        for pg in servers.values():
            await asyncio.to_thread(pg.stop)
        gc.unfreeze()


async def verdict(results: dict[str, asyncio.Task[Tally]], test: str) -> None:
    tally = await results[test]
    report = tally.report()
    (tally.scene.workdir / "report.txt").write_text(report, encoding="utf-8")
    print(report)
    assert not tally.problems, report


async def test_a_process_killed_mid_load(results: dict[str, asyncio.Task[Tally]]) -> None:
    await verdict(results, "test_a_process_killed_mid_load")


async def test_postgresql_restarted_mid_load(results: dict[str, asyncio.Task[Tally]]) -> None:
    await verdict(results, "test_postgresql_restarted_mid_load")


async def test_a_storm_of_429s_then_500s(results: dict[str, asyncio.Task[Tally]]) -> None:
    await verdict(results, "test_a_storm_of_429s_then_500s")
