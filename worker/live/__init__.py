"""Live spend: what every account and key has spent today and this month, its balance and
limit, as OpenRouter's running totals say now; and what follows from them.

``poll`` (one poll: ask OpenRouter, store what changed, evaluate the alerts, deliver),
``figures`` (today, month to date, burn rate, runway, month-end projection: the query
functions ``status``, the alerts and a dashboard read), ``jobs`` (the daemon's poll job).
"""
