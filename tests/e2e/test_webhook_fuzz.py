"""Fuzzing the three webhooks over HTTP: sample updates with sub-trees replaced by random
JSON (wrong types, deep nesting, huge numbers, odd strings), with the right secrets and
signatures, some with wrong ones, and some raw bytes. No answer is a 5xx, Telegram with
its secret always gets 200, and the service answers as before afterwards.

Hypothesis drives a plain function: the service and the platform stand-ins run on an
event loop of their own in a thread, and the examples post with a blocking client.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.config import Settings
from tests.e2e.conftest import running
from tests.e2e.webhooks import (
    CHANNELS,
    OA_TIMESTAMP,
    PATHS,
    SAMPLES,
    TELEGRAM,
    Raw,
    all_webhooks,
    encode,
    headers,
    nested,
)
from tests.fakes.telegram_api import FakeTelegram, FakeUser
from tests.fakes.zalo_bot import FakeZaloBot, ZaloBotUser
from tests.fakes.zalo_oa import FakeZaloOA, ZaloFollower

T = TypeVar("T")
# Per database, the whole run stays well under a minute.
EXAMPLES = 800


@dataclass
class Served:
    """The service with its three webhooks, and the stand-ins, on a loop in a thread."""

    loop: asyncio.AbstractEventLoop
    settings: Settings
    api: FakeTelegram
    oa: FakeZaloOA
    zbot: FakeZaloBot

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)


@contextmanager
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-service", daemon=True)
    thread.start()
    stack = AsyncExitStack()

    async def start() -> Served:
        api, oa, zbot = FakeTelegram(), FakeZaloOA(), FakeZaloBot()
        for fake in (api, oa, zbot):
            await fake.start()
            stack.push_async_callback(fake.stop)
        settings = all_webhooks(database_url, tmp_path, api, oa, zbot)
        await stack.enter_async_context(running(settings))
        return Served(loop, settings, api, oa, zbot)

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- what is posted ---------------------------------------------------------------------

RAW_TOKENS = [
    Raw(b"Infinity"),
    Raw(b"-Infinity"),
    Raw(b"NaN"),
    Raw(b"1e400"),
    Raw(b"-1E999999"),
    Raw(b"1e-400"),
    Raw(b"-0"),
    Raw(b"9" * 4000),
    Raw(b"9" * 5000),
    nested(5000),
    nested(201),
    nested(150),
    Raw(b'{"a":' * 300 + b"1" + b"}" * 300),
]
ODD_STRINGS = [
    "",
    "/start",
    "/status 38-2611-00001",
    "20.0740, 105.9120",
    "95, 200",
    "http://127.0.0.1:9/x.jpg",
    "javascript:alert(1)",
    "NaN",
    "1e400",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "\u202e\ufeff",
    "𝕏" * 20,
    "x" * 4097,
    "y" * 10_001,
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(RAW_TOKENS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=10,
)


def _places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON tree."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items: list[tuple[Any, Any]] = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        for key, inner in items:
            found.append((node, key))
            stack.append(inner)
    return found


@st.composite
def mutated(draw: st.DrawFn, update: dict[str, Any]) -> Any:
    """update with one to three of its sub-trees replaced, removed or added to."""
    root: Any = update
    for _ in range(draw(st.integers(1, 3))):
        places = _places(root)
        if not places:
            break
        node, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "remove", "add", "root"]))
        if action == "replace":
            node[key] = draw(json_values)
        elif action == "remove":
            del node[key]
        elif action == "add" and isinstance(node[key], dict):
            node[key][draw(st.text(max_size=12))] = draw(json_values)
        elif action == "root":
            root = draw(json_values) if draw(st.booleans()) else [root]
    return root


@dataclass(frozen=True)
class Case:
    channel: str
    body: bytes
    valid: bool
    timestamp: str


@st.composite
def cases(draw: st.DrawFn) -> Case:
    channel = draw(st.sampled_from(CHANNELS))
    update = SAMPLES[channel](draw(st.integers(1, 99_999)))
    kind = draw(st.sampled_from(["mutated"] * 6 + ["valid", "wrong credentials", "bytes"]))
    if kind == "bytes":
        body = draw(
            st.one_of(
                st.binary(max_size=300),
                st.integers(0, 400).map(lambda n: encode(update)[:n]),
            )
        )
        return Case(channel, body, draw(st.booleans()), OA_TIMESTAMP)
    value = update if kind == "valid" else draw(mutated(update))
    stamp = value.get("timestamp") if isinstance(value, dict) else None
    timestamp = stamp if isinstance(stamp, str) else OA_TIMESTAMP
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        timestamp = str(stamp)
    return Case(channel, encode(value), kind != "wrong credentials", timestamp)


# --- the run ------------------------------------------------------------------------------


def test_no_webhook_answers_a_fuzzed_update_with_a_server_error(
    database_url: str, tmp_path: Path
) -> None:
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[tuple[str, int, bytes]] = []
    with (
        served(database_url, tmp_path) as service,
        httpx.Client(base_url=str(service.settings.public_url), timeout=30) as http,
    ):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
                HealthCheck.filter_too_much,
            ],
        )
        @given(case=cases())
        def post(case: Case) -> None:
            sent_headers = headers(
                service.settings,
                service.oa,
                case.channel,
                case.body,
                valid=case.valid,
                timestamp=case.timestamp,
            )
            status = http.post(PATHS[case.channel], content=case.body, headers=sent_headers)
            sent[case.channel] += 1
            statuses[status.status_code] += 1
            telegram_loop = case.channel == TELEGRAM and case.valid and status.status_code != 200
            if status.status_code >= 500 or telegram_loop:
                failures.append((case.channel, status.status_code, case.body[:300]))

        post()
        assert http.get("/healthz").status_code == 200
        # The three channels still take a resident's message and answer it.
        telegram = FakeUser(service.api, chat_id=987_654)
        follower = ZaloFollower(service.oa, "8511116471999999")
        bot_user = ZaloBotUser(service.zbot, "f00dfacef00d")
        service.run(telegram.text("/start"))
        service.run(follower.text("/start"))
        service.run(bot_user.text("/start"))
        answered = [
            len(service.run(telegram.replies(1))),
            len(service.run(follower.replies(1))),
            len(service.run(bot_user.replies(1))),
        ]
    fivexx = sum(n for status, n in statuses.items() if status >= 500)
    print(
        f"\nwebhook fuzz: {sum(sent.values())} requests"
        f" ({', '.join(f'{c} {sent[c]}' for c in CHANNELS)}),"
        f" statuses {dict(sorted(statuses.items()))}, 5xx: {fivexx}"
    )
    assert failures == []
    assert fivexx == 0
    assert all(c in sent for c in CHANNELS) and {200, 400, 401} <= set(statuses)
    assert answered == [1, 1, 1]
