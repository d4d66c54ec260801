"""``GET /``: the dashboard. A page that asks for a token once, then shows server-rendered panels.

The page itself (:func:`page`) holds no data and needs no token. Its script (``static/
dashboard.js``) asks for a token, keeps it in the tab's ``sessionStorage`` only (gone when the
tab closes; never a cookie, so no request can be forged with it), and fetches
``GET /dashboard/panels`` with ``Authorization: Bearer``. The server renders those panels as
HTML with inline SVG charts (:mod:`worker.daemon.http.svg`) from
:mod:`worker.daemon.http.figures`: the script only inserts them. Today's spend, the accounts'
balances and runway and the keys that spent most today come first, then the 30 days' charts
and tops, then the last alerts and the syncs. Nothing comes from another host: no CDN, no web
font, so it works on a server without internet, and the Content-Security-Policy allows this
server only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from worker.alerts.messages import show
from worker.config.rules import METRICS
from worker.core import render
from worker.daemon.http import figures
from worker.daemon.http.api import query
from worker.daemon.http.auth import authenticate
from worker.daemon.http.context import HttpContext
from worker.daemon.http.responses import NO_STORE, ApiError
from worker.daemon.http.svg import colour, cumulative_lines, esc, share_bar, stacked_bars, swatch
from worker.reports.report import ZERO
from worker.store.alerts import HistoryItem

STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>openrouter-watcher</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head>
<body>
<header>
<h1>openrouter-watcher</h1>
<button id="sign-out" type="button" hidden>Forget token</button>
</header>
<form id="token-form" hidden>
<label for="token">API token</label>
<div class="row">
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false"
 placeholder="orw_…" required>
<button type="submit">Open</button>
</div>
<p class="hint">Create one with <code>openrouter-watcher tokens create --user EMAIL
 --name dashboard</code>. It stays in this tab only, until the tab is closed.</p>
<p id="message" role="alert"></p>
</form>
<main id="panels" aria-live="polite"></main>
<noscript><p>The dashboard needs JavaScript to send your token; the data is also at
/api/v1/usage, /api/v1/status, /api/v1/account-keys, /api/v1/alerts and
/api/v1/guards.</p></noscript>
</body>
</html>
"""


async def page(_request: Request) -> Response:
    """``GET /``: the page, the same for everyone (no data, no token)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})


def _change(now: Decimal, before: Decimal) -> str:
    if before <= 0:
        return ""
    pct = (now - before) / before * 100
    return f" ({'+' if pct >= 0 else '−'}{abs(pct):.0f} %)"


def _tile(title: str, figure_id: str, amount: Decimal, sub: str) -> str:
    return (
        f'<div class="tile"><h2>{esc(title)}</h2>'
        f'<p class="figure" id="{figure_id}" data-usd="{amount:f}">'
        f'{esc(render.dollars(amount))}</p><p class="sub">{sub}</p></div>'
    )


def _today_tile(d: figures.Dashboard) -> str:
    """Today so far, from the live poll: a dash until an account has been polled today."""
    today = d.today
    polled = [f.as_of for f in d.accounts_now if f.today is not None and f.as_of is not None]
    if today is None or not polled:
        return (
            '<div class="tile"><h2>Today so far</h2><p class="figure" id="today" data-usd="">'
            '-</p><p class="sub">no live poll today yet</p></div>'
        )
    count = sum(1 for f in d.accounts_now if f.today is not None)
    sub = f"as of {max(polled):%H:%M} UTC · {count} account{'s' if count != 1 else ''}"
    return _tile("Today so far", "today", today, sub)


def _tiles(d: figures.Dashboard) -> str:
    day, latest = d.latest_day
    this, previous = d.this_month, d.previous_month
    days_done = len(this.cumulative)
    same_days = previous.through(days_done)
    if days_done:
        month_sub = (
            f"{days_done} completed day{'s' if days_done != 1 else ''}; "
            f"{esc(render.dollars(same_days))} by then last month{_change(this.total, same_days)}"
        )
    else:
        month_sub = "no completed day yet this month"
    return (
        '<section class="tiles">'
        + _today_tile(d)
        + _tile(
            "Last 30 days",
            "total-30d",
            d.total,
            f"{d.range.since} – {d.range.until} · {d.requests:,} requests",
        )
        + _tile(f"{this.first:%B} so far", "month-to-date", this.total, month_sub)
        + _tile(f"{previous.first:%B}", "previous-month", previous.total, "the whole month")
        + _tile("Latest complete day", "latest-day", latest, f"{day} (UTC)")
        + "</section>"
    )


def _legend(names: list[str]) -> str:
    items = "".join(
        f"<li>{swatch(colour(i, name, figures.OTHER))}{esc(name)}</li>"
        for i, name in enumerate(names)
    )
    return f'<ul class="legend">{items}</ul>'


def _daily(d: figures.Dashboard) -> str:
    chart = stacked_bars(d.days, [(s.name, s.values) for s in d.series], d.day_totals)
    return (
        '<section class="panel"><h2>Spend per day, by model</h2>'
        f"{chart}{_legend([s.name for s in d.series])}</section>"
    )


def _month(d: figures.Dashboard) -> str:
    this, previous = d.this_month, d.previous_month
    chart = cumulative_lines(
        [
            ("previous", f"{previous.first:%B}", previous.cumulative),
            ("current", f"{this.first:%B}", this.cumulative),
        ]
    )
    legend = (
        '<ul class="legend"><li><span class="key previous"></span>'
        f'{previous.first:%B %Y}</li><li><span class="key current"></span>'
        f"{this.first:%B %Y}</li></ul>"
    )
    return (
        '<section class="panel"><h2>This month against the previous, cumulative</h2>'
        f"{chart}{legend}</section>"
    )


def _table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _cost_cell(cost: Decimal, whole: Decimal) -> str:
    money = f'<span class="money">{esc(render.dollars(cost))}</span>'
    return money + share_bar(cost, whole)


def _tops(d: figures.Dashboard) -> str:
    admin = d.scope.admin
    account_rows = [
        [
            esc(r.group["account_name"]),
            *([esc(r.group["user_email"])] if admin else []),
            _cost_cell(r.totals.cost, d.total),
        ]
        for r in d.top_accounts
    ]
    key_rows = [
        [esc(r.group["key_name"]), esc(r.group["account_name"]), _cost_cell(r.totals.cost, d.total)]
        for r in d.top_keys
    ]
    model_rows = [[esc(r.group["model"]), _cost_cell(r.totals.cost, d.total)] for r in d.top_models]
    accounts = _table(
        ["account", *(["user"] if admin else []), "cost"], account_rows, "top-accounts"
    )
    keys = _table(["key", "account", "cost"], key_rows, "top-keys")
    models = _table(["model", "cost"], model_rows, "top-models")
    return (
        '<div class="columns">'
        f'<section class="panel"><h2>Top accounts, 30 days</h2>{accounts}</section>'
        f'<section class="panel"><h2>Top keys, 30 days</h2>{keys}</section>'
        f'<section class="panel"><h2>Top models, 30 days</h2>{models}</section></div>'
    )


def _syncs(d: figures.Dashboard) -> str:
    admin = d.scope.admin
    rows = []
    for k in d.status.keys:
        outcome = k.last_status or "never"
        if k.last_status == "failed" and k.last_error:
            outcome = f'<span class="failed" title="{esc(k.last_error)}">failed</span>'
        rows.append(
            [
                esc(k.name),
                *([esc(k.user)] if admin else []),
                esc(k.kind),
                esc(render.cell(k.last_success_at)),
                outcome,
                esc(render.cell(k.newest_date)),
            ]
        )
    headers = ["key", *(["user"] if admin else []), "kind", "last ok (UTC)", "last", "newest day"]
    run = d.status.last_run
    summary = (
        f"last run #{run.id} ({esc(run.trigger)}) {esc(run.status)}, started "
        f"{esc(render.cell(run.started_at))} UTC: {run.keys_ok} ok, {run.keys_failed} failed"
        if run
        else "no sync has run yet"
    )
    return (
        '<section class="panel"><h2>Syncs</h2>'
        f'{_table(headers, rows, "syncs")}<p class="sub" id="last-run">{summary}; next '
        f"scheduled {esc(render.cell(d.status.next_run_at))} UTC</p></section>"
    )


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f'<span class="money">{esc(render.dollars(value))}</span>'


def _accounts_now(d: figures.Dashboard) -> str:
    admin = d.scope.admin
    rows = []
    for f in d.accounts_now:
        name = esc(f.name) + ("" if f.scope == "account" else ' <span class="sub">key</span>')
        as_of = esc(render.cell(f.as_of))
        if f.poll_error:
            as_of += f' <span class="failed" title="{esc(f.poll_error)}">poll failed</span>'
        rows.append(
            [
                name,
                *([esc(f.user)] if admin else []),
                _money(f.today),
                _money(f.month),
                _money(f.balance),
                _money(f.limit_remaining),
                "-" if f.runway_days is None else esc(show(f.runway_days, "days")),
                as_of,
            ]
        )
    headers = [
        "account",
        *(["user"] if admin else []),
        "today",
        "this month",
        "balance",
        "limit left",
        "runway",
        "as of (UTC)",
    ]
    body = (
        _table(headers, rows, "accounts-now")
        if rows
        else '<p class="sub">No live poll yet: the daemon polls every [live] interval_minutes '
        "(or run <code>openrouter-watcher poll</code>).</p>"
    )
    return (
        '<section class="panel"><h2>Accounts now: balance and runway</h2>'
        f'{body}<p class="sub">Runway: days of balance (a key: of its limit) left at the mean '
        "daily spend of the last 7 complete days.</p></section>"
    )


def _keys_today(d: figures.Dashboard) -> str:
    whole = d.today or ZERO
    rows = [
        [
            esc(f.name),
            esc(f.account or "-"),
            _cost_cell(f.today or ZERO, whole),
            _money(f.limit_remaining),
        ]
        for f in d.keys_today
    ]
    return (
        '<section class="panel"><h2>Top keys today</h2>'
        f"{_table(['key', 'account', 'today', 'limit left'], rows, 'keys-today')}</section>"
    )


def _delivery(item: HistoryItem) -> str:
    parts = []
    for n in item.notifications:
        text = f"{esc(n['channel'])} {esc(n['status'])}"
        if n["status"] in ("failed", "abandoned"):  # pending: not tried yet, not a failure
            text = f'<span class="failed" title="{esc(n["error"] or "")}">{text}</span>'
        parts.append(text)
    return ", ".join(parts) or "-"


def _alert_value(item: HistoryItem) -> str:
    if item.value is None or item.metric not in METRICS:  # a digest has no value
        return "-"
    _, _, unit, _ = METRICS[item.metric]
    return esc(show(item.value, unit))


def _alerts(d: figures.Dashboard) -> str:
    rows = [
        [
            esc(render.cell(item.fired_at)),
            esc(item.rule),
            esc(item.subject_name),
            _alert_value(item),
            _delivery(item),
        ]
        for item in d.alerts
    ]
    body = (
        _table(["fired (UTC)", "rule", "about", "value", "delivery"], rows, "alerts")
        if rows
        else f'<p class="sub" id="no-alerts">No alert in the last {figures.ALERT_DAYS} days.</p>'
    )
    return f'<section class="panel"><h2>Last alerts</h2>{body}</section>'


def _guards(d: figures.Dashboard) -> str:
    """The last guard actions: what the watcher did (or would do, in dry-run) to which key."""
    rows = [
        [
            esc(render.cell(a.sent_at or a.created_at)),
            esc(a.rule),
            esc(f"{a.key_name} ({a.account_name})"),
            esc(a.action),
            f'<span class="failed" title="{esc(a.error or "")}">{esc(a.status)}</span>'
            if a.status in ("failed", "abandoned")
            else esc(a.status),
        ]
        for a in d.guards
    ]
    body = (
        _table(["at (UTC)", "rule", "key", "action", "status"], rows, "guards")
        if rows
        else '<p class="sub" id="no-guards">No guard action yet (docs/guards.md).</p>'
    )
    return f'<section class="panel"><h2>Guards</h2>{body}</section>'


def render_panels(d: figures.Dashboard) -> str:
    """The panels' HTML for one token's figures."""
    who = esc(d.scope.email) + (" (admin: every user's keys)" if d.scope.admin else "")
    parts = [f'<p class="who" id="who">{who}</p>', _tiles(d), _accounts_now(d)]
    if d.keys_today:
        parts.append(_keys_today(d))
    if d.total == ZERO and not d.top_models:
        parts.append(
            '<section class="panel empty" id="no-usage"><h2>No usage</h2><p>No spend between '
            f"{d.range.since} and {d.range.until} for this token's keys.</p></section>"
        )
    else:
        parts += [_daily(d), _month(d), _tops(d)]
    parts += [_alerts(d), _guards(d), _syncs(d)]
    return "".join(parts)


def panels(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /dashboard/panels``: the panels for the request's token (HTML)."""

    def endpoint(request: Request) -> Response:
        scope = authenticate(request, ctx)
        query(request, ())
        with ctx.session_factory() as session:
            data = figures.collect(
                session,
                scope,
                now=ctx.clock(),
                settings=ctx.settings,
                sync_running=ctx.sync_running(),
            )
        return HTMLResponse(render_panels(data), headers=NO_STORE)

    return endpoint


def _static() -> Callable[[Request], Awaitable[Response]]:
    files = {
        name: resources.files("worker.daemon.http").joinpath("static", name).read_bytes()
        for name in STATIC
    }

    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            raise ApiError(404, "not_found", "no such page or endpoint")
        return Response(files[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    return endpoint


def routes(ctx: HttpContext) -> list[Route]:
    """The page, its panels and its two static files."""
    return [
        Route("/", page, methods=["GET"]),
        Route("/dashboard/panels", panels(ctx), methods=["GET"]),
        Route("/static/{name}", _static(), methods=["GET"]),
    ]
