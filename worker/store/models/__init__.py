"""The tables, as SQLAlchemy 2 typed declarative models, by group: ``base`` (the column
types and conventions), ``accounts`` (users, keys, their usage, tokens), ``catalogue`` (the
keys of each account and their usage), ``ledger`` (sync runs), ``live`` (snapshots, alerts),
``budget`` (the analytics requests of the last minute), ``guards`` (changes made to keys),
``ha`` (the daemons sharing the database).

Alembic owns the schema: these models are what the migrations must produce, and a test asserts
that Alembic's autogenerate comparison between the two is empty. Every model is importable
from here (``from worker.store.models import ApiKey``).
"""

from worker.store.models.accounts import ApiKey, ApiToken, UsageStats, User
from worker.store.models.base import (
    BIG_ID,
    KIND_MANAGEMENT,
    KIND_ORDINARY,
    MONEY,
    MONEY_SCALE,
    NAMING_CONVENTION,
    SOURCE_ACTIVITY,
    SOURCE_ANALYTICS,
    Base,
    Money,
    UTCDateTime,
    to_money,
    utcnow,
)
from worker.store.models.budget import AnalyticsRequest
from worker.store.models.catalogue import AccountKey, KeyUsageStats
from worker.store.models.guards import GuardAction
from worker.store.models.ha import Instance
from worker.store.models.ledger import SyncKeyResult, SyncRun
from worker.store.models.live import (
    AlertEvent,
    AlertNotification,
    AlertState,
    LiveSnapshot,
    LiveSubject,
)

__all__ = [
    "BIG_ID",
    "KIND_MANAGEMENT",
    "KIND_ORDINARY",
    "MONEY",
    "MONEY_SCALE",
    "NAMING_CONVENTION",
    "SOURCE_ACTIVITY",
    "SOURCE_ANALYTICS",
    "AccountKey",
    "AlertEvent",
    "AlertNotification",
    "AlertState",
    "AnalyticsRequest",
    "ApiKey",
    "ApiToken",
    "Base",
    "GuardAction",
    "Instance",
    "KeyUsageStats",
    "LiveSnapshot",
    "LiveSubject",
    "Money",
    "SyncKeyResult",
    "SyncRun",
    "UTCDateTime",
    "UsageStats",
    "User",
    "to_money",
    "utcnow",
]
