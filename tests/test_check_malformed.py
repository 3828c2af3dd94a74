"""Issue 20 (smaller): `dunctl check` crashed with a traceback on malformed configs. Each is a clean exit 2 with
one problem naming the file, the key path and what is allowed. (A YAML list or a scalar at the top, a tab-indented
file, non-UTF-8 bytes in dunctl.yaml or a sequence: already refused cleanly; tests/test_config.py.)"""

import yaml

from tests.helpers import cli, starter


def edited(tmp_path, change):
    path = starter(tmp_path)
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused(config, *expected: str) -> str:
    result = cli(config, "check")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
    return result.stderr


def test_a_mapping_where_failure_types_are_listed(tmp_path):
    def change(data):
        hard = next(s for s in data["segments"] if "failure_type" in (s.get("when") or {}))
        hard["when"]["failure_type"] = {"card_hard": True}
    config = edited(tmp_path, change)
    refused(config, "dunctl.yaml", ".when.failure_type", "a value or a list of values")


def test_a_nested_list_where_renewal_intervals_are_listed(tmp_path):
    def change(data):
        data["notices"] = {"upcoming_renewal": {"when": {"interval": [["year"]]}}}
    config = edited(tmp_path, change)
    refused(config, "dunctl.yaml", "notices.upcoming_renewal.when", "allowed: day, week, month, year")


def test_a_template_that_is_not_utf8(tmp_path):
    config = starter(tmp_path)
    (tmp_path / "templates" / "reminder.txt.j2").write_bytes(b"\xff\xfeHi {{ customer.name }}")
    refused(config, "reminder.txt.j2", "not UTF-8", "save the file as UTF-8")


def test_a_template_whose_code_raises(tmp_path):
    config = starter(tmp_path)
    (tmp_path / "templates" / "reminder.txt.j2").write_text("{{ 1 // 0 }}")
    refused(config, "reminder.txt.j2", "does not render", "ZeroDivisionError")
