"""`dunctl init`: a working starter config, the shipped sequences and their templates."""

from __future__ import annotations

import os
from pathlib import Path

from dunctl.config import load_config
from dunctl.errors import UsageError
from dunctl.ledger import Ledger


def shipped_dir() -> Path:
    """Where the shipped sequences and example config are: the source checkout, else the installed wheel."""
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "sequences").is_dir() and (checkout / "example-config.yaml").is_file():
        return checkout
    return package / "shipped"


def write_starter(target: Path, *, email_transport: str = "file") -> list[Path]:
    """Write dunctl.yaml, sequences/ and templates/ into `target`. Refuses to overwrite anything."""
    source = shipped_dir()
    plan: list[tuple[Path, Path]] = [(source / "example-config.yaml", target / "dunctl.yaml")]
    plan += [(p, target / "sequences" / p.name) for p in sorted((source / "sequences").glob("*.yaml"))]
    plan += [(p, target / "templates" / p.name) for p in sorted((source / "sequences" / "templates").glob("*.j2"))]
    existing = [dest for _, dest in plan if dest.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists; dunctl init never overwrites",
                         "choose an empty directory: dunctl init DIR")
    for folder in dict.fromkeys(dest.parent for _, dest in plan):   # three folders for ~280 files
        folder.mkdir(parents=True, exist_ok=True)
    written = []
    for src, dest in plan:
        _write_new(dest, src.read_bytes())
        written.append(dest)
    if email_transport != "file":
        config = target / "dunctl.yaml"
        config.write_text(config.read_text().replace("transport: file ", f"transport: {email_transport} ", 1))
    return written


def _write_new(dest: Path, data: bytes) -> None:
    """`data` as the new file `dest`, never over an existing one: O_EXCL refuses even a file made since the check
    above. Cheaper than shutil.copyfile too (no same-file stats, no sendfile loop): ~280 files per init or demo."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise UsageError(f"{dest} already exists; dunctl init never overwrites",
                         "choose an empty directory: dunctl init DIR") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def create_ledger(config_path: Path) -> Path:
    """Create the ledger the config at `config_path` names, with its schema, and return its path. Only `dunctl
    init` (and an explicit --new-ledger) creates a ledger; an existing one is opened and left as it is."""
    path = load_config(config_path).ledger_path
    Ledger.open(path, create=True).close()
    return path
