"""A malformed config names the file, the key path and what is allowed, exits 2, and changes nothing."""

import hashlib
import time

import pytest
import yaml

from dunctl.config import load_config
from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter


def edit_yaml(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def step(sequence, index, **fields):
    def change(data):
        data["steps"][index].update(fields)
    return sequence, change


def config_change(change):
    return "dunctl.yaml", change


CORPUS = {
    "unknown top-level key": (config_change(lambda d: d.update(retry_policy="aggressive")),
                              ["dunctl.yaml", "retry_policy", "unknown key 'retry_policy'", "allowed keys are",
                               "segments"]),
    "unknown nested key": (config_change(lambda d: d["stripe"].update(api_key="sk_test_x")),
                           ["stripe.api_key", "unknown key 'api_key'", "api_key_env"]),
    "bad retries mode": (config_change(lambda d: d["stripe"].update(retries="sometimes")),
                         ["stripe.retries", "'sometimes' is not allowed", "'stripe' or 'dunctl'"]),
    "bad grace": (config_change(lambda d: d["dunning"].update(grace="soon")),
                  ["dunning.grace", "'soon' is not an offset", "30m"]),
    "bad quiet hours": (config_change(lambda d: d["sender"].update(quiet_hours="late")),
                        ["sender.quiet_hours", "HH:MM-HH:MM"]),
    "unknown time zone": (config_change(lambda d: d["sender"].update(timezone="Mars/Olympus")),
                          ["sender.timezone", "unknown time zone 'Mars/Olympus'"]),
    "no default segment": (config_change(lambda d: d["segments"].pop()),
                           ["dunctl.yaml", "segments", "the last segment must be a default"]),
    "unknown sequence": (config_change(lambda d: d["segments"][-1].update(sequence="gentle")),
                         ["segments[5].sequence", "unknown sequence 'gentle'", "known sequences: ach"]),
    "unknown condition field": (config_change(lambda d: d["segments"][3]["when"].update(plan="pro")),
                                ["segments[3].when.plan", "unknown field 'plan'", "customer.metadata.KEY"]),
    "threshold without currency": (config_change(lambda d: d["segments"][0].update(
                                       when={"amount_due": {"gte": 5000}})),
                                   ["segments[0].when.amount_due.gte", "names its currency"]),
    "unknown failure type": (config_change(lambda d: d["segments"][1]["when"].update(
                                 failure_type=["card_hard", "card_broken"])),
                             ["segments[1].when.failure_type[1]", "unknown failure type 'card_broken'"]),
    "bad offset": (step("sequences/standard.yaml", 3, at="three days"),
                   ["standard.yaml", "steps[3].at", "'three days' is not an offset", "bd (business days)"]),
    "step id too long for Stripe": (step("sequences/standard.yaml", 1, id="retry-" + "after-the-notice-" * 12),
                                    ["standard.yaml", "steps[1].id", "a step id has 1 to 64 characters (210 here)"]),
    "unknown action": (step("sequences/standard.yaml", 1, action="charge"),
                       ["standard.yaml", "steps[1].action", "'charge' is not allowed", "'retry'"]),
    "unknown step key": (step("sequences/standard.yaml", 0, template_name="x"),
                         ["standard.yaml", "steps[0].template_name", "unknown key", "allowed keys are id, at"]),
    "unknown template": (step("sequences/standard.yaml", 2, template="remindr"),
                         ["standard.yaml", "steps[2].template", "unknown template 'remindr'",
                          "known templates: account-manager"]),
    "steps out of order": (step("sequences/standard.yaml", 2, at="1h"),
                           ["standard.yaml", "steps[2].at", "comes before the previous step"]),
    "too many retries": (("sequences/standard.yaml", lambda d: d.update(max_attempts=3)),
                         ["standard.yaml", "3 retry steps exceed the cap", "max_attempts is 3"]),
    "retry on a hard-decline sequence": (("sequences/update-payment-method.yaml", lambda d: (
                                              d.update(max_attempts=3),
                                              d["steps"].insert(1, {"id": "retry", "at": "1d", "action": "retry"}))),
                                         ["update-payment-method.yaml", "steps[1]",
                                          "a hard decline must never be retried"]),
    "duplicate step id": (step("sequences/ach.yaml", 1, id="notice"),
                          ["ach.yaml", "steps[1].id", "step id 'notice' is used twice"]),
    "email without template": (("sequences/high-value.yaml", lambda d: d["steps"][0].pop("template")),
                               ["high-value.yaml", "steps[0].template", "needs a template"]),
    # Numbers bounded to what they can mean (issue 12 item 8): each of these crashed check or every tick.
    "grace beyond any date": (config_change(lambda d: d["dunning"].update(grace="99999999999999w")),
                              ["dunctl.yaml", "dunning.grace", "too long", "allowed: 0m to 90d"]),
    "tick budget beyond any date": (config_change(lambda d: d["dunning"].update(tick_budget="99999999999999w")),
                                    ["dunning.tick_budget", "too long"]),
    "notice before suspension beyond any date": (config_change(lambda d: d["dunning"].update(
                                                     notice_before_suspension="99999999999999w")),
                                                 ["dunning.notice_before_suspension", "allowed: 0m to 90d"]),
    "retry wait of zero": (config_change(lambda d: d["dunning"].update(action_retry_after="0")),
                           ["dunning.action_retry_after", "out of range", "allowed: 1m to 7d"]),
    "step years after the failure": (step("sequences/standard.yaml", 6, at="3000000d"),
                                     ["standard.yaml", "steps[6].at", "too far from the first failure",
                                      "up to 365d"]),
    "request rate above Stripe's": (config_change(lambda d: d["stripe"].update(max_requests_per_second=150)),
                                    ["dunctl.yaml", "stripe.max_requests_per_second", "at most 100",
                                     "25 in test mode", "use 25"]),
    "port above 65535": (config_change(lambda d: d["channels"]["email"].update(transport="smtp", port=99999)),
                         ["channels.email.port", "less than or equal to 65535"]),
    "negative port": (config_change(lambda d: d["channels"]["email"].update(transport="smtp", port=-1)),
                      ["channels.email.port", "greater than or equal to 1"]),
    "zero timeout": (config_change(lambda d: d["channels"]["email"].update(timeout=0)),
                     ["channels.email.timeout", "greater than 0"]),
    "negative timeout": (config_change(lambda d: d["channels"].update(
                             webhook={"url": "https://example.com/h", "timeout": -5})),
                         ["channels.webhook.timeout", "greater than 0"]),
    "endless timeout": (config_change(lambda d: d["channels"].update(slack={"timeout": float("inf")})),
                        ["channels.slack.timeout", "finite number"]),
}


@pytest.mark.parametrize("name", CORPUS)
def test_check_and_tick_refuse_a_malformed_config_and_change_nothing(tmp_path, name):
    (target, change), expected = CORPUS[name]
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    ledger.close()
    before = hashlib.sha256((tmp_path / "dunctl.db").read_bytes()).hexdigest()
    edit_yaml(tmp_path / target, change)

    checked = cli(config, "check")
    assert checked.exit_code == 2
    for fragment in expected:
        assert fragment in checked.stderr, (fragment, checked.stderr)

    ticked = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    assert ticked.exit_code == 2
    assert expected[1] in ticked.stderr
    assert hashlib.sha256((tmp_path / "dunctl.db").read_bytes()).hexdigest() == before
    assert not (tmp_path / "outbox").exists()


def test_yaml_syntax_errors_give_the_line(tmp_path):
    config = starter(tmp_path)
    config.write_text(config.read_text() + "\nnotes: [unclosed\n")
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "dunctl.yaml:" in result.stderr and "not valid YAML" in result.stderr


def test_errors_carry_the_line_of_the_offending_key(tmp_path):
    config = starter(tmp_path)
    lines = config.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("  retries:"))
    config.write_text(config.read_text().replace("  retries: stripe", "  retries: never"))
    result = cli(config, "check")
    assert f"dunctl.yaml:{number} stripe.retries" in result.stderr


def test_a_template_that_does_not_render_fails_check(tmp_path):
    config = starter(tmp_path)
    (tmp_path / "templates" / "reminder.txt.j2").write_text("Hi {{ customer.nickname }}")
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "reminder.txt.j2" in result.stderr and "nickname" in result.stderr


def test_a_missing_config_file_says_how_to_start(tmp_path):
    result = cli(tmp_path / "nope.yaml", "tick")
    assert result.exit_code == 2
    assert "nope.yaml: file not found" in result.stderr and "dunctl init" in result.stderr


def test_check_accepts_the_starter_and_notes_smart_retries_once(tmp_path):
    result = cli(starter(tmp_path), "check", env={"STRIPE_API_KEY": "sk_test_123"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 6 segments, 6 sequences")
    assert result.stderr.count("retry steps are left to Stripe's Smart Retries") == 1


def test_init_writes_a_working_starter_and_never_overwrites(tmp_path):
    first = cli(tmp_path / "x.yaml", "init", str(tmp_path / "new"))
    assert first.exit_code == 0
    assert (tmp_path / "new" / "dunctl.db").stat().st_size > 0  # init creates the ledger, with its schema
    assert cli(tmp_path / "new" / "dunctl.yaml", "check", env={"STRIPE_API_KEY": "sk_test_123"}).exit_code == 0
    again = cli(tmp_path / "x.yaml", "init", str(tmp_path / "new"))
    assert again.exit_code == 2 and "never overwrites" in again.stderr


def test_check_renders_the_branch_a_template_takes_for_each_failure_type(tmp_path):
    config = starter(tmp_path)
    (tmp_path / "templates" / "reminder.txt.j2").write_text(
        "{% if failure.type == 'card_hard' %}{{ customer.shoe_size }}{% endif %}ok")
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "reminder.txt.j2" in result.stderr and "card_hard case" in result.stderr and "shoe_size" in result.stderr


BOMB = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

# Raw text edits that no YAML dumper would write: (file, edit of the text, fragments expected on stderr)
HOSTILE = {
    "alias bomb": ("dunctl.yaml", lambda t: t + BOMB, ["dunctl.yaml", "more than 100,000 values", "alias bomb"]),
    "alias bomb in a sequence": ("sequences/standard.yaml", lambda t: t + BOMB.replace("\n", "\nx", 1),
                                 ["standard.yaml", "more than 100,000 values"]),
    "self-referencing alias": ("dunctl.yaml", lambda t: t + "\nloop: &l [1, *l]\n",
                               ["dunctl.yaml", "loop[1]", "alias *l refers to an anchor that is not defined"]),
    "20,000-deep nesting": ("dunctl.yaml", lambda t: t + "\ndeep:\n  " + "- " * 20_000 + "x\n",
                            ["dunctl.yaml:", "deep[0][0]", "maximum nesting depth (64 levels)"]),
    "20,000-deep flow nesting": ("dunctl.yaml", lambda t: t + "\ndeep: " + "[" * 20_000 + "]" * 20_000 + "\n",
                                 ["dunctl.yaml:", "maximum nesting depth"]),
    "Latin-1 bytes": ("dunctl.yaml", lambda t: t.replace("company: Example", "company: Caf\udce9 Example"),
                      ["dunctl.yaml:", "not UTF-8 text: byte 0xe9", "save the file as UTF-8"]),
    "duplicate key": ("dunctl.yaml", lambda t: t.replace("  grace: 1d", "  grace: 1d\n  grace: 2d"),
                      ["dunctl.yaml:", "dunning.grace", "duplicate key 'grace' (first given at line"]),
    "duplicate step key": ("sequences/standard.yaml", lambda t: t.replace("action: retry}",
                                                                          "action: retry, action: email}", 1),
                           ["standard.yaml:", "action", "duplicate key 'action'"]),
    "two documents": ("dunctl.yaml", lambda t: t + "\n---\nsegments: []\n", ["more than one YAML document"]),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_check_and_tick_refuse_hostile_yaml_fast_and_change_nothing(tmp_path, name):
    target, edit, expected = HOSTILE[name]
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    ledger.close()
    before = (tmp_path / "dunctl.db").read_bytes()
    path = tmp_path / target
    path.write_bytes(edit(path.read_text()).encode("utf-8", errors="surrogateescape"))

    started = time.perf_counter()
    checked = cli(config, "check")
    ticked = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    assert time.perf_counter() - started < 10      # the bomb expanded would take minutes and gigabytes
    for result in (checked, ticked):
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        for fragment in expected:
            assert fragment in result.stderr, (fragment, result.stderr)
    assert (tmp_path / "dunctl.db").read_bytes() == before
    assert not (tmp_path / "outbox").exists()


def test_duplicate_key_names_both_lines(tmp_path):
    config = starter(tmp_path)
    lines = config.read_text().splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.startswith("  grace:"))
    config.write_text(config.read_text().replace("  grace: 1d", "  grace: 1d\n  grace: 2d"))
    result = cli(config, "check")
    assert f"dunctl.yaml:{first + 1} dunning.grace: duplicate key 'grace' (first given at line {first})" \
        in result.stderr


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    config = starter(tmp_path)
    sequence = tmp_path / "sequences" / "standard.yaml"
    text = sequence.read_text().replace("name: standard", "name: &n standard")
    text = text.replace("description: Soft card declines, 30 days", "description: *n")
    text = text.replace("{id: retry-1,       at: 2d,  action: retry}", "&retry {id: retry-1, at: 2d, action: retry}")
    text = text.replace("{id: retry-2,       at: 6d,  action: retry}", "{<<: *retry, id: retry-2, at: 6d}")
    sequence.write_text(text)
    result = cli(config, "check", env={"STRIPE_API_KEY": "sk_test_123"})
    assert result.exit_code == 0, result.output
    steps = load_config(config).sequences["standard"]
    assert steps.description == "standard"
    assert [(s.id, s.at.text, s.action) for s in steps.steps if s.action == "retry"][:2] == [
        ("retry-1", "2d", "retry"), ("retry-2", "6d", "retry")]


def test_a_byte_order_mark_is_accepted(tmp_path):
    config = starter(tmp_path)
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    assert cli(config, "check", env={"STRIPE_API_KEY": "sk_test_123"}).exit_code == 0


def test_the_default_request_rate_is_stripes_sandbox_and_per_endpoint_limit():
    """Stripe allows 25 requests a second in a sandbox and per endpoint (100 in all, live): 25 by default."""
    from dunctl.config import StripeConfig

    assert StripeConfig().max_requests_per_second == 25
