"""A deterministic synthetic month of AI usage: customers, models, tokens, GPU time.

Same seed, same events, byte for byte (ids included), so running the demo twice shows
idempotency rather than double counting. Volumes follow a working-day rhythm: busy
office hours, quiet nights, lighter weekends.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from meterline.demo.calendar import REFERENCE_MONTH, days_in


@dataclass(frozen=True)
class ModelProfile:
    name: str
    input_tokens_mean: int
    output_tokens_mean: int


@dataclass(frozen=True)
class CustomerProfile:
    name: str
    requests_per_day: int
    models: tuple[tuple[str, int], ...]
    features: tuple[str, ...]
    embeddings_share: float = 0.1
    tool_calls_per_request: float = 0.0
    gpu_jobs_per_day: int = 0


MODELS = {
    profile.name: profile
    for profile in (
        ModelProfile("gpt-4o", 1800, 420),
        ModelProfile("gpt-4o-mini", 900, 260),
        ModelProfile("claude-sonnet-4", 2400, 610),
        ModelProfile("claude-haiku-4", 700, 180),
        ModelProfile("llama-3.1-70b", 1500, 380),
    )
}

CUSTOMERS = (
    CustomerProfile(
        "acme-copilot", 900, (("gpt-4o", 5), ("gpt-4o-mini", 3)), ("code-complete", "chat"), 0.05
    ),
    CustomerProfile(
        "globex-support",
        600,
        (("claude-haiku-4", 6), ("gpt-4o-mini", 2)),
        ("ticket-triage", "reply-draft"),
        0.2,
    ),
    CustomerProfile("initech-legal", 220, (("claude-sonnet-4", 1),), ("contract-review",), 0.3),
    CustomerProfile(
        "umbrella-health",
        300,
        (("gpt-4o", 2), ("llama-3.1-70b", 3)),
        ("clinical-notes",),
        0.15,
        gpu_jobs_per_day=6,
    ),
    CustomerProfile(
        "hooli-search", 700, (("gpt-4o-mini", 4), ("claude-haiku-4", 2)), ("answer", "rerank"), 0.35
    ),
    CustomerProfile(
        "stark-agents",
        450,
        (("claude-sonnet-4", 3), ("gpt-4o", 2)),
        ("agent",),
        0.05,
        tool_calls_per_request=1.5,
    ),
    CustomerProfile("wayne-analytics", 150, (("gpt-4o", 1),), ("sql-copilot",), 0.1),
    CustomerProfile(
        "tyrell-research", 90, (("llama-3.1-70b", 1),), ("synthesis",), 0.0, gpu_jobs_per_day=20
    ),
    CustomerProfile(
        "cyberdyne-ops",
        260,
        (("gpt-4o-mini", 1), ("claude-haiku-4", 1)),
        ("runbook-agent",),
        0.05,
        tool_calls_per_request=0.8,
    ),
    CustomerProfile(
        "wonka-marketing", 120, (("claude-sonnet-4", 1), ("gpt-4o", 1)), ("copywriting",), 0.1
    ),
)

TOOLS = ("web.search", "code.exec", "sql.query", "http.fetch", "vector.lookup")
GPU_PRICE_PER_SECOND = {"h100": Decimal("0.0007"), "a100": Decimal("0.00035")}
"""What the GPU provider bills per second (COGS carried on each ``gpu.runtime`` event)."""
GPUS = (("h100", Decimal("0.001")), ("a100", Decimal("0.01")))
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 8, 9, 10, 10, 9, 7, 5, 4, 3, 2, 2, 1)


def _hour(rng: random.Random) -> int:
    return rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]


def _moment(rng: random.Random, start: datetime, day: int) -> datetime:
    offset = timedelta(
        days=day,
        hours=_hour(rng),
        seconds=rng.randrange(3600),
        microseconds=rng.randrange(1_000_000),
    )
    return start + offset


def _event(
    rng: random.Random, customer: str, kind: str, moment: datetime, properties: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "customer": customer,
        "type": kind,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "properties": properties,
    }


def _tokens(rng: random.Random, mean: int) -> int:
    return max(1, int(rng.lognormvariate(0, 0.6) * mean * 0.85))


def _customer_day(
    rng: random.Random, profile: CustomerProfile, start: datetime, day: int, scale: float
) -> list[dict[str, Any]]:
    weekday = (start + timedelta(days=day)).weekday()
    rhythm = 0.45 if weekday >= 5 else 1.0
    requests = int(profile.requests_per_day * rhythm * scale * rng.uniform(0.85, 1.15))
    names = [name for name, _ in profile.models]
    weights = [weight for _, weight in profile.models]
    events = []
    for _ in range(requests):
        moment = _moment(rng, start, day)
        model = MODELS[rng.choices(names, weights)[0]]
        feature = rng.choice(profile.features)
        if rng.random() < profile.embeddings_share:
            events.append(
                _event(
                    rng,
                    profile.name,
                    "embedding.create",
                    moment,
                    {
                        "model": "text-embedding-3-small",
                        "tokens": _tokens(rng, 600),
                        "feature": feature,
                    },
                )
            )
            continue
        events.append(
            _event(
                rng,
                profile.name,
                "llm.completion",
                moment,
                {
                    "model": model.name,
                    "feature": feature,
                    "input_tokens": _tokens(rng, model.input_tokens_mean),
                    "output_tokens": _tokens(rng, model.output_tokens_mean),
                    "latency_ms": rng.randrange(180, 9000),
                },
            )
        )
        calls = int(profile.tool_calls_per_request + rng.random())
        for _ in range(calls):
            events.append(
                _event(
                    rng,
                    profile.name,
                    "agent.tool_call",
                    moment,
                    {"tool": rng.choice(TOOLS), "agent": f"{feature}-{rng.randrange(1, 9)}"},
                )
            )
    for _ in range(int(profile.gpu_jobs_per_day * rhythm * scale)):
        gpu, step = rng.choice(GPUS)
        seconds = (Decimal(rng.randrange(30_000, 3_600_000)) * step).quantize(step)
        events.append(
            _event(
                rng,
                profile.name,
                "gpu.runtime",
                _moment(rng, start, day),
                # the provider's bill for the job, carried on the event (exact decimal)
                {"gpu": gpu, "seconds": seconds, "cost_usd": GPU_PRICE_PER_SECOND[gpu] * seconds},
            )
        )
    return events


def generate_month(
    seed: int = 7, scale: float = 1.0, month: date = REFERENCE_MONTH
) -> list[dict[str, Any]]:
    """The events of ``month`` (its first day) in time order (ties broken by id),
    deterministic in ``seed`` and ``month``."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    rng = random.Random(seed)
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    events = []
    for day in range(days_in(month)):
        for profile in CUSTOMERS:
            events.extend(_customer_day(rng, profile, start, day, scale))
    events.sort(key=lambda event: (event["timestamp"], event["id"]))
    return events
