"""The modules dunctl imports inside a function instead of at the top, each with the reason, in one line.

Every other import is at its module's top. One reason covers them all: what cron runs most, an idle
`dunctl tick` (and `--help`), must not pay for what only work, printing or another command needs
(tests/test_startup.py, bench/bench_startup.py); a few commands keep a cheap path the same way (`status --json`,
`case show`). Such an import is written `from x import y   # lazy: see dunctl/lazy.py`, and only for a module
named below (or a module inside one named): tests/test_lazy_imports.py fails on any other in-function import, and
on a name here that no function imports any more, so this list only shrinks. A module imported lazily still
imports what it needs at its own top.

Two other places load on first use, by name: the commands (COMMANDS in dunctl/cli/app.py) and the exports of
dunctl.tick (dunctl/tick/__init__.py).
"""

LAZY: dict[str, str] = {
    # other packages
    "babel": "formatting for a locale: with the first amount, date or configured locale; an idle tick formats none",
    "jinja2": "templates: parsed only when one changed, rendered with the first message or an HTML report",
    "rich": "printing tables and progress: an idle tick prints nothing (Typer loads Rich for `--help` itself)",
    "sqlite_utils": "only to create or migrate a ledger (40 ms): an up-to-date ledger is read through sqlite3",
    "stripe": "the Stripe SDK: only `check --online` calls Stripe from dunctl.preflight",
    # the CLI
    "dunctl.cli.common": "config, ledger and Rich: `--help` and `--version` need none of them",
    "dunctl.cli.holds": "`report --journal` only; it brings the receivables' holds with it",
    "dunctl.cli.report": "the report's renderers (Rich's console): `status --json` prints no headline",
    "dunctl.stripe": "the gateway and the SDK, built at the first Stripe call: `tick --no-sync` makes none",
    # the ledger
    "dunctl.ledger.migrations": "with sqlite_utils (90 ms): only when a migration is pending, or the report's "
                                "attribution window changed (rebuilding its channel rollup)",
    "dunctl.ledger.scripts": "running a migration's SQL script (with sqlite_utils): only when a migration is "
                             "pending",
    "dunctl.ledger.records": "the typed records, built once a query found a row that needs one (25 ms)",
    "dunctl.ledger.views.experiments": "an experiment's report: a tick only assigns arms",
    "dunctl.sequential": "an experiment's statistics, for the report: a tick only assigns arms",
    # the tick, once a query found work
    "dunctl.adoption": "taking over cases another ledger worked: once the sync brought invoices or signals",
    "dunctl.planner": "deciding what is due: once a case or a notice is due",
    "dunctl.messages": "templates and formatting (Jinja2, Babel): with the first message",
    "dunctl.tick.actions": "what each action does (messages, Stripe calls): once an effect is prepared",
    "dunctl.tick.changes": "a case change: loads only when one is made",
    "dunctl.tick.endings": "what follows a case's end (thanks, lifts): once a case ended",
    "dunctl.tick.executor": "claiming, acting and recording: once an effect is due",
    "dunctl.tick.reconcile": "opening, following and closing cases: once the sync brought invoices or signals",
    "dunctl.tick.schedule": "planning a case (the planner): once one is due, resumed or resolved; `status` reads "
                            "cases without it",
    "dunctl.channels.email": "a channel's transport (smtplib, ssl), built when the channel first sends",
    "dunctl.channels.mime": "an email's bytes (email.utils): with the first email sent",
    "dunctl.channels.outbox": "the file transport, built when the email channel first sends (without smtplib)",
    "dunctl.channels.slack": "a channel's transport, built when the channel first sends",
    "dunctl.channels.sms": "a channel's transport, built when the channel first sends",
    "dunctl.channels.webhook": "a channel's transport, built when the channel first sends",
    "dunctl.notices.effects": "a pre-dunning notice's effect: once one is due",
    "dunctl.notices.planner": "planning pre-dunning notices: once one may be due, or on a switch to live",
    "dunctl.notices.planning": "planning pre-dunning notices in a tick: once a subscription is due for it",
    "dunctl.notices.sync": "the billing backfill for notices: only a tick that syncs",
    "dunctl.receivables.holds": "a hold's end (importing it registers how reconciling applies one): only when one "
                                "ends, and for `case promise` and `case dispute`",
    "dunctl.receivables.packet": "the collections packet renders the messages sent (Jinja2): `case export` only",
}


def allowed(module: str) -> bool:
    """Whether `module` may be imported inside a function: it, or a package holding it, is named in LAZY."""
    return any(module == name or module.startswith(name + ".") for name in LAZY)
