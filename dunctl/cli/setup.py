"""`dunctl init` and `dunctl check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dunctl.cli.common import JsonOption, err, handles_errors, load, out, print_json
from dunctl.errors import ConfigError
from dunctl.messages import Templates, check_templates
from dunctl.notices.config import render_problems
from dunctl.scaffold import write_starter


@handles_errors
def init(directory: Annotated[Path, typer.Argument(help="Where to write the starter files.")] = Path(".")) -> None:
    """Write a starter dunctl.yaml, sequences/ and templates/ into DIR (never overwrites)."""
    written = write_starter(directory)
    out.print(f"wrote {len(written)} files into {directory}/: dunctl.yaml, sequences/, templates/", markup=False)
    out.print(f"next: edit {directory / 'dunctl.yaml'}, then `dunctl -c {directory / 'dunctl.yaml'} check`",
              markup=False)


@handles_errors
def check(as_json: JsonOption = False) -> None:
    """Validate the config, segments, sequences and templates; render every template against a sample case."""
    config = load()
    used = {step.template: step.action for seq in config.sequences.values() for step in seq.steps if step.template}
    problems = check_templates(config.templates_dir, used, config.file.sender.company, config.file.sender.locale)
    problems += render_problems(config.file.notices, Templates(config.templates_dir), config.file.sender.company)
    if problems:
        raise ConfigError(problems)
    if as_json:
        print_json({"ok": True, "sequences": sorted(config.sequences), "templates": sorted(used),
                    "notes": config.notes})
        return
    for note in config.notes:
        err.print(f"note: {note}", markup=False)
    out.print(f"ok: {len(config.file.segments)} segments, {len(config.sequences)} sequences "
              f"({', '.join(sorted(config.sequences))}), {len(used)} templates rendered", markup=False)
