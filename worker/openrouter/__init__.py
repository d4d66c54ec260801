"""OpenRouter's API as the worker uses it: the typed client, its retry policy and rate
limits, and the parsed, validated answers; nothing here knows of storage or the sync.

``client`` (the endpoints), ``transport`` (HTTP: retries, deadlines, error mapping), ``retry``
(the policy object), ``pacing`` (rate limits), ``activity`` (``/activity`` rows, the one
validator, daily totals), ``analytics`` (a year of history), ``keys`` (``/key``, ``/keys``,
``/workspaces``, ``/credits``), ``fields`` (the contract's field checks they share).
"""

from worker.openrouter.activity import MAX_MODEL_LENGTH, ActivityRow, daily_totals, parse_activity
from worker.openrouter.analytics import AnalyticsAnswer
from worker.openrouter.client import USER_AGENT, Activity, OpenRouterClient
from worker.openrouter.keys import CatalogKey, Credits, KeyInfo, Spend, parse_key
from worker.openrouter.retry import RetryPolicy, parse_retry_after
from worker.openrouter.transport import MANAGEMENT_KEY_HELP

__all__ = [
    "MANAGEMENT_KEY_HELP",
    "MAX_MODEL_LENGTH",
    "USER_AGENT",
    "Activity",
    "ActivityRow",
    "AnalyticsAnswer",
    "CatalogKey",
    "Credits",
    "KeyInfo",
    "OpenRouterClient",
    "RetryPolicy",
    "Spend",
    "daily_totals",
    "parse_activity",
    "parse_key",
    "parse_retry_after",
]
