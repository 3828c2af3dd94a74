"""The file transport: one .eml per message in a directory, for demos, dry runs and a mail pickup directory.

Apart from the SMTP transport (dunctl/channels/email.py) so that writing files never loads smtplib and ssl (9 ms of
every process that sends, a demo's included); both send the same bytes, built by dunctl/channels/mime.py."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from dunctl.channels import Delivery, EmailMessage
from dunctl.channels.mime import build_message, key_digest
from dunctl.errors import ChannelError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")   # what a file name for a key replaces


class FileTransport:
    """Writes each message to DIR/<key>.eml. The same key overwrites its file, so a re-run never duplicates.

    Each file is written whole and renamed into place (a reader never sees half a message); there is no fsync per
    message: the ledger's own commit is what records the action, and a crash re-sends at most into the same file.
    """

    def __init__(self, dir: Path):
        self.dir = Path(dir)
        self._where = str(self.dir)
        self._dir_fd: int | None = None   # names are resolved against the open directory, not walked every time

    def path_for(self, key: str) -> Path:
        return self.dir / f"{safe_filename(key)}.eml"

    def send(self, message: EmailMessage, *, sender: str, reply_to: str | None, key: str,
             now: datetime) -> Delivery:
        built = build_message(message, sender=sender, reply_to=reply_to, key=key, now=now)
        name = f"{safe_filename(key)}.eml"
        tmp = f".tmp-{os.getpid()}-{name}"
        try:
            if self._dir_fd is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=self._dir_fd)
            try:
                os.write(fd, built.data)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError as exc:
            if self._dir_fd is not None:
                try:
                    os.unlink(tmp, dir_fd=self._dir_fd)
                except OSError:
                    pass
            raise ChannelError(f"could not write {self._where}/{name}: {exc.strerror or exc}",
                               "check channels.email.dir") from None
        return Delivery(f"wrote {self._where}/{name}", built.message_id)

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def safe_filename(key: str) -> str:
    """A file name for `key`: readable, safe on any filesystem, and distinct for distinct keys."""
    readable = _UNSAFE.sub("_", key).strip("._")[:80] or "message"
    digest = key_digest(key)[:10]
    return f"{readable}-{digest}"
