"""The one base of every model read from dunctl.yaml or a sequence file, and how a place inside such a file is
written (`segments[2].when.failure_type`).

It sits below `dunctl.config`, `dunctl.notices.config` and `dunctl.experiments` rather than inside the config
package: the config's schema is built from the notices' and the experiments' sections, so those two must be able
to import their base without importing the config package (that was the config <-> experiments import cycle).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are refused (a typo never passes silently); fields aliased for YAML (`from`) may also be set by
    their Python name."""

    # defer_build: a model's validator is built when it first validates, not when the module is imported; a
    # nested model is validated through its parent's, so a process builds one validator per file it loads
    # instead of one per model (about a third of an idle tick's CPU went to building all of them).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


def format_path(path: tuple) -> str:
    """('steps', 3, 'at') -> 'steps[3].at'"""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
