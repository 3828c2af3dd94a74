"""The hand-off to collections, through the real CLI against the fake Stripe: it POSTs the case's packet to
`collections.webhook`, signed like every dunctl webhook, to a local HTTP receiver (a failing webhook fails the
step, the case is not handed off, the packet stays on disk, and the next tick delivers it); the packet goes to a
webhook, a directory or both, and a config with a hand_off step and neither is refused; and, being irreversible,
it waits for a delivered message announcing it, like a pause."""

from __future__ import annotations

import json
from datetime import timedelta

import yaml

from dunctl.channels.webhook import verify_signature
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli
from tests.servers import http_receiver, smtp_server  # noqa: F401  (fixture)
from tests.test_receivables import DAY, ENV, books  # noqa: F401  (fixture)

SECRET = "whsec_agency_123"


def test_the_collections_packet_goes_to_the_webhook_and_a_failure_is_retried_losing_nothing(books, http_receiver):
    config = yaml.safe_load(books.config.read_text())
    config["collections"] = {"dir": "collections",
                             "webhook": {"url": http_receiver.url("/agency"), "secret_env": "AGENCY_SECRET"}}
    books.config.write_text(yaml.safe_dump(config))
    announced(books)
    invoice = books.issue("acme", 90000, due=T0 + 7 * DAY)
    env = {**ENV, "AGENCY_SECRET": SECRET}
    books.tick(T0 + 8 * DAY + timedelta(hours=1))                      # the final reminder announces the hand-off

    http_receiver.respond(500, "agency down")
    when = T0 + 12 * DAY + timedelta(hours=1)
    books.fake.set_now(when)
    failed = cli(books.config, "tick", "--now", when.isoformat(), env=env)
    assert failed.exit_code == 1 and "500" in failed.stderr
    case = books.show(invoice)
    step = {a["step_id"]: a for a in case["actions"]}["to-agency"]
    assert (step["status"], case["case"]["state"]) == ("failed", "open")
    assert json.loads((books.config.parent / "collections" / f"{invoice}.json").read_text())["invoice"]["id"] \
        == invoice                                                     # written before the post: nothing lost

    http_receiver.respond(200, "ok")
    when += timedelta(hours=1)
    books.fake.set_now(when)
    done = cli(books.config, "tick", "--now", when.isoformat(), env=env)
    assert done.exit_code == 0, done.output
    first, second = [r for r in http_receiver.requests if r.path == "/agency"]
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"]      # one event, deduplicated by its id
    assert verify_signature(SECRET, second.headers["Dunctl-Signature"], second.body, now=None)
    event = json.loads(second.body)
    assert (event["type"], event["data"]["invoice"]["id"], event["data"]["invoice"]["amount_remaining"]) == \
        ("collections.hand_off", invoice, 90000)
    assert event["data"]["customer"]["billing_email"] == "ap@acme.test"
    case = books.show(invoice)
    step = {a["step_id"]: a for a in case["actions"]}["to-agency"]
    assert (case["case"]["state"], case["case"]["with_person"], step["status"]) == ("paused", 1, "done")
    assert "webhook" in step["detail"]


def announced(books) -> None:
    """A net-terms sequence whose final reminder, a day after the due date, announces the hand-off a day later."""
    (books.config.parent / "sequences" / "net-terms.yaml").write_text(
        "name: net-terms\nsteps:\n"
        "  - {id: final, at: 1d, action: email, template: invoice-overdue-final, announces: to-agency}\n"
        "  - {id: to-agency, at: 2d, action: hand_off}\n")


def test_the_hand_off_waits_until_the_final_reminder_was_delivered_3_days_before_and_its_day_ended(books):
    """Like a pause, a hand-off cannot be undone: it runs only once the customer was told, at least
    dunning.notice_before_suspension (3 days) before, and after the end of the day the reminder named."""
    announced(books)
    invoice = books.issue("acme", 90000, due=T0 + 7 * DAY)
    books.tick(T0 + 8 * DAY + timedelta(hours=1))                      # Nov 10: the final reminder
    [(_, step, _, text)] = books.mail()
    assert step == "final" and "If it is still unpaid on November 13, 2026, we will pass it to our collections " \
                               "agency at the end of that day." in text
    books.tick(T0 + 9 * DAY + timedelta(hours=1))                      # its own time: told a day ago, not enough
    case = books.show(invoice)
    assert case["case"]["state"] == "open" and "to-agency" not in {a["step_id"] for a in case["actions"]}
    books.tick(T0 + 11 * DAY + timedelta(hours=1))                     # Nov 13, the day named: not before it ends
    assert books.show(invoice)["case"]["state"] == "open"
    books.tick(T0 + 11 * DAY + timedelta(hours=16))                    # Nov 14, 01:00 in New York
    case = books.show(invoice)
    assert case["case"]["state"] == "paused" and case["case"]["held_because"].startswith("with collections since "
                                                                                          "2026-11-14")


def test_with_only_a_webhook_the_packet_goes_there_alone_and_case_export_writes_to_the_current_directory(
        books, http_receiver, tmp_path, monkeypatch):
    config = yaml.safe_load(books.config.read_text())
    config["collections"] = {"webhook": {"url": http_receiver.url("/agency"), "secret_env": "AGENCY_SECRET"}}
    books.config.write_text(yaml.safe_dump(config))
    announced(books)
    invoice = books.issue("acme", 90000, due=T0 + 7 * DAY)
    for when in (T0 + 8 * DAY + timedelta(hours=1), T0 + 12 * DAY + timedelta(hours=1)):   # announced, handed off
        books.fake.set_now(when)
        ticked = cli(books.config, "tick", "--now", when.isoformat(), env={**ENV, "AGENCY_SECRET": SECRET})
        assert ticked.exit_code == 0, ticked.output
    [posted] = [r for r in http_receiver.requests if r.path == "/agency"]
    assert json.loads(posted.body)["data"]["invoice"]["id"] == invoice
    assert not (books.config.parent / "collections").exists()          # no directory was asked for
    case = books.show(invoice)
    assert (case["case"]["state"], case["case"]["held_because"]) == (
        "paused", "with collections since 2026-11-14 (packet sent to collections.webhook): a person closes it")
    assert {a["step_id"]: a["detail"] for a in case["actions"]}["to-agency"].startswith(
        "collections.hand_off delivered to webhook 127.0.0.1:")

    here = tmp_path / "desk"
    here.mkdir()
    monkeypatch.chdir(here)                      # no collections.dir: `case export` writes where it is run
    exported = cli(books.config, "case", "export", invoice, "--now", (T0 + 13 * DAY).isoformat())
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in here.iterdir()) == [f"{invoice}.html", f"{invoice}.json"]


def test_a_hand_off_step_with_neither_a_directory_nor_a_webhook_is_refused_naming_the_key(books):
    config = yaml.safe_load(books.config.read_text())
    config["collections"] = {"after": "45d"}
    books.config.write_text(yaml.safe_dump(config))
    checked = cli(books.config, "check", env=ENV)
    assert checked.exit_code == 2
    [error] = checked.stderr.splitlines()
    line = 1 + yaml.safe_dump(config).splitlines().index("collections:")
    assert error == f"Error: {books.config}:{line} collections: the hand_off step ({books.config.parent / 'sequences' / 'net-terms.yaml'} " \
           "steps[8]) needs somewhere to send the collections packet; set collections.dir (a directory, relative " \
           "to dunctl.yaml) and/or collections.webhook ({url_env: ..., secret_env: ...})"


def test_case_export_writes_to_collections_dir_unless_told_where(books):
    invoice = books.issue("acme", 90000, due=T0 + 7 * DAY)
    books.tick(T0 + timedelta(hours=1))                                # its case opens a week before the due date
    exported = cli(books.config, "case", "export", invoice, "--json", "--now", (T0 + DAY).isoformat())
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["written"] == [str(books.config.parent / "collections" / f"{invoice}.{kind}")
                                                      for kind in ("json", "html")]
    elsewhere = books.config.parent / "for-the-agency"
    assert cli(books.config, "case", "export", invoice, "--to", str(elsewhere), "--now",
               (T0 + DAY).isoformat()).exit_code == 0
    assert (elsewhere / f"{invoice}.json").exists()
