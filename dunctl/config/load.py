"""Loading: read `dunctl.yaml` and every sequence file it points at, validate each against the schema, then run
the cross-checks. Every problem carries the file, the key path inside it, the line, and what is allowed; loading
never touches the ledger, so a bad config changes nothing.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from dunctl.config.checks import cross_check, sequence_problems
from dunctl.config.schema import Config, ConfigFile, Sequence
from dunctl.config.yaml import read_yaml
from dunctl.errors import ConfigError, ConfigProblem
from dunctl.experiments import check_experiments
from dunctl.notices.config import template_problems
from dunctl.strict import format_path


def load_config(path: str | Path) -> Config:
    """Load and validate the config, its sequences and its templates. Raises ConfigError listing every problem."""
    path = Path(path).resolve()
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "", "the config must be a mapping (key: value)")])
    try:
        config_file = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(exc, ConfigFile, path, lines))

    base = path.parent
    sequences_dir = (base / config_file.sequences.dir).resolve()
    templates_dir = (base / config_file.templates.dir).resolve()
    sequences, sequence_files, broken, problems = _load_sequences(path, sequences_dir, lines)
    if not templates_dir.is_dir():
        problems.append(ConfigProblem(str(path), "templates.dir", f"no such directory: {templates_dir}",
                                      lines.get(("templates", "dir"))))

    config = Config(config_file, path, sequences, sequence_files, templates_dir)
    problems += cross_check(config, lines, broken)
    problems += check_experiments(config, lines, broken)
    problems += template_problems(config_file.notices, templates_dir, path, lines)
    if problems:
        raise ConfigError(problems)
    return config


def _load_sequences(config_path: Path, sequences_dir: Path, lines: dict):
    """Every sequence file in `sequences_dir`: (sequences by name, their files, the names of the invalid ones,
    problems)."""
    sequences: dict[str, Sequence] = {}
    sequence_files: dict[str, Path] = {}
    broken: set[str] = set()
    problems: list[ConfigProblem] = []
    if not sequences_dir.is_dir():
        problems.append(ConfigProblem(str(config_path), "sequences.dir", f"no such directory: {sequences_dir}",
                                      lines.get(("sequences", "dir"))))
        return sequences, sequence_files, broken, problems
    for seq_path in sorted(sequences_dir.glob("*.yaml")) + sorted(sequences_dir.glob("*.yml")):
        sequence, seq_problems = _load_sequence(seq_path)
        problems += seq_problems
        if isinstance(sequence, str):
            broken.add(sequence)
        elif sequence is not None:
            if sequence.name in sequences:
                problems.append(ConfigProblem(str(seq_path), "name",
                                              f"sequence '{sequence.name}' is also defined in "
                                              f"{sequence_files[sequence.name]}"))
            sequences[sequence.name] = sequence
            sequence_files[sequence.name] = seq_path
    return sequences, sequence_files, broken, problems


def _load_sequence(path: Path) -> tuple[Sequence | str | None, list[ConfigProblem]]:
    """The sequence, or (when it is invalid) its name, so that segments naming it report no second error."""
    try:
        data, lines = read_yaml(path)
    except ConfigError as exc:
        return None, exc.problems
    if not isinstance(data, dict):
        return None, [ConfigProblem(str(path), "", "a sequence must be a mapping with name and steps")]
    try:
        sequence = Sequence.model_validate(data)
    except ValidationError as exc:
        return str(data.get("name") or path.stem), _validation_problems(exc, Sequence, path, lines)
    return sequence, sequence_problems(sequence, path, lines)


# -- pydantic's errors as problems ------------------------------------------------------------------------------


def _validation_problems(exc: ValidationError, model: type[BaseModel], file: Path, lines: dict,
                         prefix: tuple = ()) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = f"unknown key '{loc[-1]}'"
            if allowed:
                message += f"; allowed keys are {', '.join(allowed)}"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"'{error.get('input')}' is not allowed; allowed: {expected}"
        else:
            message = error["msg"].removeprefix("Value error, ")
        full = prefix + loc
        line = lines.get(full) or lines.get(full[:-1])
        problems.append(ConfigProblem(str(file), format_path(full), message, line))
    return problems


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys allowed at `loc` (the parent of an unknown key), by walking the model's annotations."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if args else Any
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = next((f for name, f in annotation.model_fields.items() if (f.alias or name) == part), None)
            if info is None:
                return None
            annotation = info.annotation
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or name for name, f in annotation.model_fields.items()]
    return None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation
