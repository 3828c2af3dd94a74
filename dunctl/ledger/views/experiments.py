"""The ledger's SQL for experiments: the per-arm aggregates `report --by arm` is built from, and what `status`
shows. Intent-named functions over a Ledger; the columns come from migration m103_experiments. A case's arm is
recorded by the case store (`ledger.cases.assign_arm`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dunctl.ledger.sql import ENDED_STATES, OPEN_STATES
from dunctl.ledger.views.period import Period
from dunctl.ledger.views.report import customer_message

if TYPE_CHECKING:
    from dunctl.ledger import Ledger

_ENDED = "state IN ({})".format(", ".join(f"'{s}'" for s in ENDED_STATES))
_OPEN = "state IN ({})".format(", ".join(f"'{s}'" for s in OPEN_STATES))


def experiments_in_ledger(ledger: Ledger) -> list[str]:
    return [row[0] for row in ledger.conn.execute(
        "SELECT DISTINCT experiment FROM cases WHERE experiment IS NOT NULL ORDER BY experiment")]


def _where(experiment: str, since: str | None, until: str | None, alias: str = "") -> tuple[str, list]:
    period, params = Period(since, until).where(f"{alias}first_failed_at")
    return f"{alias}experiment = ? AND {period}", [experiment, *params]


def arm_counts(ledger: Ledger, experiment: str, since: str | None = None, until: str | None = None) -> list[dict]:
    """Per arm: cases, open, ended, recovered, payment attempts after the failed one, cases with a person."""
    where, params = _where(experiment, since, until)
    return list(ledger.rows(
        f"""SELECT arm, count(*) AS cases,
                   coalesce(sum({_OPEN}), 0) AS open, coalesce(sum({_ENDED}), 0) AS ended,
                   coalesce(sum(state = 'recovered'), 0) AS recovered,
                   coalesce(sum(max(max(attempts, coalesce(recovered_attempt, 0)) - 1, 0)), 0) AS retries,
                   coalesce(sum(with_person), 0) AS with_person
            FROM cases WHERE {where} GROUP BY arm ORDER BY arm""", params))


def arm_customer_sums(ledger: Ledger, experiment: str, since: str | None = None,
                      until: str | None = None) -> dict[str, dict]:
    """Per arm, with the customer as the unit (customers are randomised, their cases are not): customers,
    cases, recovered, and the sums of cases^2, recovered^2 and cases x recovered over customers that a
    cluster-robust variance needs (dunctl/sequential.py ArmSample)."""
    where, params = _where(experiment, since, until)
    return {row["arm"]: row for row in ledger.rows(
        f"""SELECT arm, count(*) AS customers, sum(n) AS cases, sum(x) AS recovered, sum(n * n) AS cases_squared,
                   sum(x * x) AS recovered_squared, sum(n * x) AS cases_recovered
            FROM (SELECT arm, customer_id, count(*) AS n, coalesce(sum(state = 'recovered'), 0) AS x
                  FROM cases WHERE {where} GROUP BY arm, customer_id)
            GROUP BY arm""", params)}


def arm_currencies(ledger: Ledger, experiment: str, since: str | None = None,
                   until: str | None = None) -> list[dict]:
    """Per arm and currency: cases, recovered, and (over ended cases) the amount at stake and recovered."""
    where, params = _where(experiment, since, until)
    return list(ledger.rows(
        f"""SELECT arm, currency, count(*) AS cases, coalesce(sum(state = 'recovered'), 0) AS recovered,
                   coalesce(sum(CASE WHEN {_ENDED} THEN amount_due - amount_paid_at_open END), 0) AS at_stake,
                   coalesce(sum(CASE WHEN {_ENDED} THEN amount_recovered END), 0) AS recovered_amount
            FROM cases WHERE {where} GROUP BY arm, currency ORDER BY arm, currency""", params))


def arm_recovery_seconds(ledger: Ledger, experiment: str, since: str | None = None,
                         until: str | None = None) -> dict[str, list[int]]:
    """Per arm: whole seconds from first failure to payment of each recovered case, ascending."""
    where, params = _where(experiment, since, until)
    result: dict[str, list[int]] = {}
    for arm, seconds in ledger.conn.execute(
            f"""SELECT arm, max(CAST(round((julianday(recovered_at) - julianday(first_failed_at)) * 86400)
                                     AS INTEGER), 0) AS s
                FROM cases WHERE {where} AND state = 'recovered' AND recovered_at IS NOT NULL
                ORDER BY arm, s""", params):
        result.setdefault(arm, []).append(seconds)
    return result


def arm_messages(ledger: Ledger, experiment: str, since: str | None = None,
                 until: str | None = None) -> dict[str, int]:
    """Per arm: emails and SMS dunctl delivered on the arm's cases, one per delivery as the customer received it
    (a grouped message covering several cases, one `message_ref`, counts once; a customer's cases share an arm)."""
    where, params = _where(experiment, since, until, alias="c.")
    return dict(ledger.conn.execute(
        f"""SELECT c.arm, count(DISTINCT coalesce(a.message_ref, 'action:' || a.id))
            FROM cases c JOIN actions a ON a.case_id = c.id
            WHERE {where} AND {customer_message("a")}
            GROUP BY c.arm""", params).fetchall())


def experiment_status(ledger: Ledger) -> list[dict]:
    """For `dunctl status`: every experiment with cases, per arm, its cases and how many are still open."""
    return list(ledger.rows(
        f"""SELECT experiment, arm, count(*) AS cases, coalesce(sum({_OPEN}), 0) AS open
            FROM cases WHERE experiment IS NOT NULL GROUP BY experiment, arm ORDER BY experiment, arm"""))
