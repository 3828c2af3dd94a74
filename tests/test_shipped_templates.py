"""The shipped templates come compiled in the wheel (hatch_build.py, dunctl/messages/compiled.py `ship`): a first run
on a machine loads them instead of compiling them, and loads exactly the code it would have compiled."""

import subprocess
import sys
import zipfile
from pathlib import Path

from jinja2 import pass_context

from dunctl.messages import compiled
from dunctl.messages.templates import Templates
from dunctl.scaffold import write_starter

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_TEMPLATES = ROOT / "sequences" / "templates"


def entries(cache: Path) -> list[Path]:
    """The compiled templates a process kept in its own cache: one per template it compiled."""
    directory = cache / "templates"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def starter(directory: Path) -> Path:
    write_starter(directory)
    return directory / "templates"


def test_the_wheel_carries_every_shipped_template_compiled_and_a_first_run_compiles_none(tmp_path, monkeypatch):
    # The wheel built as `pip install .` builds it (hatchling and its hooks), with this venv's Jinja: its entries
    # are for exactly this Python and Jinja.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("dunctl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.startswith("dunctl/shipped/compiled-templates/")]
        archive.extractall(tmp_path / "wheel", members=names)
    templates = sorted(p.name for p in SHIPPED_TEMPLATES.glob("*.j2"))
    assert len(names) == len(templates) > 200

    monkeypatch.setattr(compiled, "SHIPPED", tmp_path / "wheel" / "dunctl" / "shipped" / "compiled-templates")
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    directory = starter(tmp_path / "demo")
    env = Templates(directory).env
    for name in templates:
        template = env.get_template(name)
        assert template.root_render_func.__code__.co_filename == str(directory / name)   # the user's file, named
    assert entries(tmp_path / "cache") == []        # every one loaded from the wheel: none compiled, none kept twice


def test_shipped_code_is_the_code_a_process_compiles(tmp_path, monkeypatch):
    count = compiled.ship(SHIPPED_TEMPLATES, tmp_path / "shipped")
    directory = starter(tmp_path / "a")
    monkeypatch.setenv("DUNCTL_CACHE_DIR", "off")
    fresh = Templates(directory).env            # no cache at all: each template compiled here
    monkeypatch.setattr(compiled, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    loaded = Templates(directory).env
    names = sorted(p.name for p in directory.glob("*.j2"))
    assert count == len(names)
    for name in names:
        # code objects compare by what they run (instructions, constants, names, nested blocks), not by file
        assert loaded.get_template(name).root_render_func.__code__ == \
            fresh.get_template(name).root_render_func.__code__, name
    assert entries(tmp_path / "cache") == []
    context = dict(count=1, tone="standard", company="Acme", invoice={"number": "INV-1"}, amount="$1.00")
    assert loaded.get_template("payment-failed.subject.j2").render(context) == \
        fresh.get_template("payment-failed.subject.j2").render(context)


def test_an_edited_template_or_another_filter_is_compiled_not_taken_from_the_wheel(tmp_path, monkeypatch):
    compiled.ship(SHIPPED_TEMPLATES, tmp_path / "shipped")
    monkeypatch.setattr(compiled, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    directory = starter(tmp_path / "a")
    (directory / "payment-failed.subject.j2").write_text("Edited {{ invoice.number }}")
    env = Templates(directory).env
    assert env.get_template("payment-failed.subject.j2").render(invoice={"number": "INV-1"}) == "Edited INV-1"
    assert len(entries(tmp_path / "cache")) == 1     # compiled (and kept) for its new source
    env.get_template("payment-failed.txt.j2")
    assert len(entries(tmp_path / "cache")) == 1     # an unedited one still comes from the wheel

    # A filter the generated code calls with its context: the shipped code (which passes none) is not this
    # environment's, and is not taken.
    other = Templates(directory).env
    other.filters["money"] = pass_context(lambda context, amount, currency: f"{amount} {currency}")
    other.get_template("payment-failed.txt.j2")
    assert len(entries(tmp_path / "cache")) == 2


def test_the_build_hook_compiles_with_jinja_alone(tmp_path):
    """The wheel's build environment has Jinja and hatchling, none of dunctl's other dependencies: the hook loads
    the two modules it needs from their files, and they import nothing else."""
    script = f"""
import importlib.abc, sys
from pathlib import Path
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"pydantic", "babel", "yaml", "typer", "rich", "stripe", "sqlite_utils",
                                   "requests", "click"}}:
            raise ImportError(f"{{name}} is not in the build environment")
sys.meta_path.insert(0, Absent())
sys.path = [p for p in sys.path if Path(p).resolve() != Path({str(ROOT)!r})]
sys.path.insert(0, {str(ROOT)!r})
import hatch_build
sys.path.remove({str(ROOT)!r})
compiled = hatch_build._dunctl_module(Path({str(ROOT)!r}), "dunctl.messages.compiled", "dunctl.messages.environment")
print(compiled.ship(Path({str(SHIPPED_TEMPLATES)!r}), Path({str(tmp_path / "out")!r})))
print(sorted(m for m in sys.modules if m.startswith("dunctl")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    count, modules = done.stdout.splitlines()
    assert int(count) == len(list(SHIPPED_TEMPLATES.glob("*.j2")))
    assert modules == str(["dunctl", "dunctl.cache", "dunctl.messages.compiled", "dunctl.messages.environment"])
