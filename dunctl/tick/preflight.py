"""What must hold before a tick touches anything: every template parses. A template that does not would fail
its action on every tick, so the tick refuses to start instead (exit 2, nothing changed), as `check` would.

Parsing needs Jinja2, which an idle cron tick should not pay for: the templates are parsed only when one changed
since the last time they all parsed (their names, sizes and modification times, remembered by the caller)."""

from __future__ import annotations

import hashlib

from dunctl.config import Config
from dunctl.errors import ConfigError, ConfigProblem


def templates_signature(config: Config) -> str:
    """A fingerprint of the templates dir: changes when any template is added, removed or edited."""
    digest = hashlib.sha256()
    for path in sorted(config.templates_dir.glob("*.j2")):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def templates_parse(config: Config, known_good: str | None = None) -> str:
    """Parse (not render) every template in the templates dir; raise ConfigError naming each broken file.
    Returns the signature that parsed; with `known_good` equal to it, nothing is parsed at all."""
    signature = templates_signature(config)
    if signature == known_good:
        return signature
    from jinja2 import Environment, TemplateSyntaxError   # lazy: see dunctl/lazy.py

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
    return signature
