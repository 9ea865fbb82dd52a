"""The process's Prometheus instruments, counted where things happen (one line each).

Each `hotline serve` process counts its own events here; /metrics (backend/web/metrics.py)
adds the gauges read from the shared database at scrape time. Labels are a closed set
of words (channel, status class, reason, action, province code), never a chat, a name,
a ticket code or a path.

Calls for the modules that count:
    GEOCODER_CALLS.labels(kind="search", outcome="ok").inc()   # reverse; failed, not_found
    TRANSITIONS.labels(action=transition.action).inc()
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# Counters without their *_created series (a second series per label set, unused here).
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Zalo waits 2 s for a webhook's answer, Telegram longer: the buckets are around that.
WEBHOOK_SECONDS = Histogram(
    "hotline_webhook_duration_seconds",
    "Time to answer a platform's webhook, by channel and status class (2xx, 4xx, 5xx).",
    ("channel", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
    registry=REGISTRY,
)

OUTBOX_SENT = Counter(
    "hotline_outbox_sent",
    "Messages the platform took, by channel.",
    ("channel",),
    registry=REGISTRY,
)

# retry_after (the platform asked us to wait), http_5xx, network, blocked (the resident
# blocked the bot), bad_request, undeliverable (outside the reply window), other.
SEND_FAILURE_REASONS = (
    "retry_after",
    "http_5xx",
    "network",
    "blocked",
    "bad_request",
    "undeliverable",
    "other",
)
SEND_FAILURES = Counter(
    "hotline_outbox_send_failures",
    "Sends that did not go through, by channel and reason.",
    ("channel", "reason"),
    registry=REGISTRY,
)

TRANSITIONS = Counter(
    "hotline_workflow_transitions",
    "Ticket workflow transitions made, by action (a retried one counts again).",
    ("action",),
    registry=REGISTRY,
)

GEOCODER_KINDS = ("search", "reverse")
GEOCODER_OUTCOMES = ("ok", "failed", "not_found")
GEOCODER_CALLS = Counter(
    "hotline_geocoder_calls",
    "Requests to the geocoder, by kind (search, reverse) and outcome (ok, failed, not_found).",
    ("kind", "outcome"),
    registry=REGISTRY,
)
for _kind in GEOCODER_KINDS:
    for _outcome in GEOCODER_OUTCOMES:
        GEOCODER_CALLS.labels(kind=_kind, outcome=_outcome)


def status_class(status: int) -> str:
    """200 → '2xx': a label of five values, not one per status."""
    return f"{status // 100}xx" if 100 <= status < 600 else "other"
