"""One strict base (dunctl/strict.py) under every section of dunctl.yaml: the config's own models, the notices'
and the experiments'. It sits below the config package, so that package imports the sections without their
importing it back (tests/test_import_cycles.py holds the package to that)."""

from __future__ import annotations

from dunctl.config import ConfigFile, Sequence, Step
from dunctl.experiments import Arm, Experiment
from dunctl.notices.config import NoticesConfig
from dunctl.strict import Strict


def test_every_section_of_the_config_is_built_on_the_one_strict_base():
    for model in (ConfigFile, Sequence, Step, NoticesConfig, Experiment, Arm):
        assert issubclass(model, Strict), model
    assert Strict.model_config["extra"] == "forbid"
