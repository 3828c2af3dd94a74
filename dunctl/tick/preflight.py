"""What must hold before a tick touches anything: every template parses. A template that does not would fail
its action on every tick, so the tick refuses to start instead (exit 2, nothing changed), as `check` would."""

from __future__ import annotations

from jinja2 import Environment, TemplateSyntaxError

from dunctl.config import Config
from dunctl.errors import ConfigError, ConfigProblem


def templates_parse(config: Config) -> None:
    """Parse (not render) every template in the templates dir; raise ConfigError naming each broken file."""
    env = Environment()
    problems = []
    for path in sorted(config.templates_dir.glob("*.j2")):
        try:
            env.parse(path.read_text(encoding="utf-8"), name=path.name, filename=str(path))
        except TemplateSyntaxError as exc:
            problems.append(ConfigProblem(str(path), "", f"does not parse: {exc.message}", exc.lineno))
        except UnicodeDecodeError as exc:
            problems.append(ConfigProblem(str(path), "", f"is not UTF-8 text: {exc.reason}"))
    if problems:
        raise ConfigError(problems, "fix the template and run `dunctl check`; the tick changed nothing")
