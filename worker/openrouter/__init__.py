"""OpenRouter's API as the worker uses it: the client, its retry policy, the parsed answers.

``client`` (one ``httpx.Client``, error mapping), ``retry`` (the policy object), ``activity``
(``/activity`` rows, the one validator, daily totals), ``keys`` (``/key``), ``fields`` (the
contract's field checks they share).
"""

from worker.openrouter.activity import MAX_MODEL_LENGTH, ActivityRow, daily_totals, parse_activity
from worker.openrouter.client import (
    MANAGEMENT_KEY_HELP,
    USER_AGENT,
    Activity,
    OpenRouterClient,
)
from worker.openrouter.keys import KeyInfo, parse_key
from worker.openrouter.retry import RetryPolicy, parse_retry_after

__all__ = [
    "MANAGEMENT_KEY_HELP",
    "MAX_MODEL_LENGTH",
    "USER_AGENT",
    "Activity",
    "ActivityRow",
    "KeyInfo",
    "OpenRouterClient",
    "RetryPolicy",
    "daily_totals",
    "parse_activity",
    "parse_key",
    "parse_retry_after",
]
