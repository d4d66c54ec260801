"""Generated OpenRouter activity: realistic ``ActivityItem`` rows, what a correct sync stores
for them, and JSON with exact decimals (shared by the fake, the tests and the benchmark)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

# --- data -----------------------------------------------------------------------------------

MODEL_SLUGS = (
    "openai/gpt-4.1",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-pro",
    "openai/gpt-4o-mini",
    "deepseek/deepseek-r1",
    "meta-llama/llama-3.3-70b-instruct",
    "anthropic/claude-3.5-haiku",
    "mistralai/mistral-large-2411",
    "openai/o3-mini",
    "google/gemini-2.5-flash",
    "x-ai/grok-3",
    "qwen/qwen-2.5-72b-instruct",
    "anthropic/claude-opus-4",
    "openai/gpt-4.1-mini",
    "cohere/command-r-plus-08-2024",
    "deepseek/deepseek-chat-v3-0324",
    "perplexity/sonar-pro",
    "nousresearch/hermes-3-llama-3.1-405b",
    "microsoft/phi-4",
    "amazon/nova-pro-v1",
)
PROVIDERS = (
    "OpenAI",
    "Anthropic",
    "Google",
    "Together",
    "DeepInfra",
    "Fireworks",
    "Azure",
    "Amazon Bedrock",
    "Groq",
    "Lambda",
)
_NANO = Decimal("0.000000001")


def _permaslug(slug: str) -> str:
    return f"{slug}-2025-04-14"


def generate_activity(
    *,
    today: dt.date,
    days: int = 30,
    models: int | Sequence[str] = 5,
    endpoints: int = 1,
    seed: int = 0,
    scale: Decimal = Decimal("1"),
) -> list[dict[str, Any]]:
    """Realistic raw ``ActivityItem`` dicts for the ``days`` completed days before ``today``.

    One row per (day, model, endpoint): ``days * models * endpoints`` rows, deterministic for
    a seed. Costs are Decimals with up to 9 decimals (times ``scale``), some rows have
    ``reasoning_tokens > completion_tokens``, and every fifth row spells its date
    ``"YYYY-MM-DD 00:00:00"`` as OpenRouter sometimes does: compare by ``date[:10]``, or use
    :func:`expected_totals`.
    """
    rng = random.Random(seed)
    if isinstance(models, int):
        slugs = [
            MODEL_SLUGS[i] if i < len(MODEL_SLUGS) else f"vendor-{i // 20}/model-{i}"
            for i in range(models)
        ]
    else:
        slugs = list(models)
    endpoint_ids = {
        (slug, e): str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for slug in slugs
        for e in range(endpoints)
    }
    rows: list[dict[str, Any]] = []
    count = 0
    for back in range(days, 0, -1):
        day = today - dt.timedelta(days=back)
        for slug in slugs:
            for e in range(endpoints):
                requests = rng.randint(1, 2000)
                prompt = requests * rng.randint(50, 4000)
                completion = requests * rng.randint(5, 800)
                reasoning = (
                    completion + rng.randint(1, 5000)
                    if rng.random() < 0.15
                    else rng.randint(0, completion)
                )
                usage = (Decimal(rng.randint(0, 25_000_000_000)) * _NANO * scale).quantize(_NANO)
                byok = (
                    (Decimal(rng.randint(1, 2_000_000_000)) * _NANO * scale).quantize(_NANO)
                    if rng.random() < 0.1
                    else Decimal(0)
                )
                rows.append(
                    {
                        "date": day.isoformat() + (" 00:00:00" if count % 5 == 4 else ""),
                        "model": slug,
                        "model_permaslug": _permaslug(slug),
                        "endpoint_id": endpoint_ids[(slug, e)],
                        "provider_name": PROVIDERS[(hash_index(slug) + e) % len(PROVIDERS)],
                        "usage": usage,
                        "byok_usage_inference": byok,
                        "requests": requests,
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "reasoning_tokens": reasoning,
                    }
                )
                count += 1
    return rows


def hash_index(text: str) -> int:
    """A stable small integer for a string (``hash()`` is salted per process)."""
    return int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:8], 16)


def expected_totals(rows: Iterable[dict[str, Any]]) -> dict[tuple[dt.date, str], dict[str, Any]]:
    """What a correct sync stores for raw rows: sums per (day, model), exact duplicates once.

    Values: ``requests``, ``prompt_tokens``, ``completion_tokens``, ``reasoning_tokens``
    (ints), ``usage``, ``byok_usage_inference`` (Decimal).
    """
    totals: dict[tuple[dt.date, str], dict[str, Any]] = {}
    seen: set[str] = set()
    for row in rows:
        day = dt.date.fromisoformat(str(row["date"])[:10])
        identity = json.dumps({**row, "date": day.isoformat()}, sort_keys=True, default=str)
        if identity in seen:
            continue
        seen.add(identity)
        total = totals.setdefault(
            (day, row["model"]),
            {
                "requests": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "reasoning_tokens": 0,
                "usage": Decimal(0),
                "byok_usage_inference": Decimal(0),
            },
        )
        for name in ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens"):
            total[name] += row[name]
        for name in ("usage", "byok_usage_inference"):
            total[name] += Decimal(str(row[name]))
    return totals


def dumps(value: Any) -> str:
    """JSON with Decimals written as exact numbers (``json`` would refuse or go via float)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def as_stored(
    totals: dict[tuple[dt.date, str], dict[str, Any]],
) -> dict[tuple[dt.date, str], tuple[Any, ...]]:
    """:func:`expected_totals` in the shape :func:`worker.testing.usage.stored_usage` returns
    rows: (requests, tokens in, out, reasoning, cost, BYOK cost)."""
    return {
        pair: (
            t["requests"],
            t["prompt_tokens"],
            t["completion_tokens"],
            t["reasoning_tokens"],
            t["usage"],
            t["byok_usage_inference"],
        )
        for pair, t in totals.items()
    }
