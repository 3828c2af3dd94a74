"""Instructions a command executes, counted by valgrind's cachegrind (`--cache-sim=no`): the same count whatever
else runs on the machine. On this project's host CPU seconds move by up to 1.6x within the hour (the same demo
took 2.2 s at one moment and 3.6 s forty minutes later, nothing else running), so a before/after is compared in
instructions, with CPU seconds of both next to it. None when valgrind is not installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path


def available() -> bool:
    return shutil.which("valgrind") is not None


def count(argv: list[str], *, env: dict | None = None, cwd: Path | None = None) -> int | None:
    """Instructions `argv` executed (its own and its libraries'), or None without valgrind."""
    if not available():
        return None
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                           *argv], capture_output=True, text=True, env=env, cwd=cwd, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    return int(found.group(1).replace(",", "")) if found else None


def tree_env(env: dict, tree: Path | None) -> dict:
    """`env` with dunctl imported from `tree` (a copy of another commit, `git archive REV | tar -x -C TREE`) when
    one is given: the same venv runs both sides of a before/after."""
    if tree is None:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
