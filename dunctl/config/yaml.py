"""Safe YAML loading for the config and the sequence files: the data, and the line of every key path in it.

Refuses what `yaml.safe_load` would accept or choke on: bytes that are not UTF-8, a file that is not a regular
file or is too big, a key given twice in one mapping, more than one document, nesting deeper than MAX_YAML_DEPTH,
and more than MAX_YAML_VALUES values once aliases are expanded (the expansion is counted, never performed).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from dunctl.errors import ConfigError, ConfigProblem
from dunctl.strict import format_path

# Bounds on what a config file may be: far above any real config, far below what hurts. A YAML alias bomb
# ("billion laughs") stays a few hundred bytes on disk and expands to billions of values; nesting thousands deep
# blows the stack of anything that walks it.
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_VALUES = 100_000    # every scalar, list and mapping, counted again each time an alias repeats it
MAX_YAML_DEPTH = 64

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed: 10-20x faster
_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """The file's data and the line of every key path in it, or ConfigError naming the file (and line)."""
    file = str(path)
    try:
        raw = _read_capped(path)
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "file not found")],
                          "run `dunctl init` to write a starter config, or pass --config PATH")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "", f"cannot read: {exc.strerror or exc}")])
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError([ConfigProblem(file, "", f"the file is more than {MAX_YAML_BYTES:,} bytes, the most a "
                                                   "config or sequence file may be")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([ConfigProblem(file, "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column "
                                                   f"{column}; save the file as UTF-8", line)])
    try:
        node, lines = _compose(text.removeprefix("\ufeff"), file)
        data = yaml.constructor.SafeConstructor().construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(file, "", f"not valid YAML: {problem}", mark.line + 1 if mark else None)])
    except (ValueError, OverflowError) as exc:  # a scalar the constructor cannot build (a date like 2026-02-31)
        raise ConfigError([ConfigProblem(file, "", f"not valid YAML: {exc}")])
    return data, lines


def _read_capped(path: Path) -> bytes:
    """At most MAX_YAML_BYTES + 1 bytes of a regular file. Anything else is refused before it is read: a FIFO
    would block the command until some writer came (cron would pile up ticks), and /dev/zero or /dev/urandom would
    be read until memory ran out. O_NONBLOCK makes opening a FIFO return at once, so its type can be checked."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) \
                else "not a regular file"
            raise ConfigError([ConfigProblem(str(path), "", f"is {kind}, not a regular file; a config or sequence "
                                                            "must be a plain file (write it out, then point at it)")])
        chunks, size = [], 0
        while size <= MAX_YAML_BYTES:
            chunk = os.read(fd, MAX_YAML_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _Refused(Exception):
    def __init__(self, path: tuple, message: str, line: int):
        self.path, self.message, self.line = path, message, line


def _compose(text: str, file: str) -> tuple[yaml.Node | None, dict[tuple, int]]:
    """The document's root node (None for an empty document) and key path -> 1-based line."""
    try:
        return _Composer().compose(yaml.parse(text, Loader=_Loader))
    except _Refused as refused:
        raise ConfigError([ConfigProblem(file, format_path(refused.path), refused.message, refused.line)])


class _Frame:
    """One open collection while its events arrive."""

    __slots__ = ("node", "path", "size", "anchor", "key", "seen")

    def __init__(self, node: yaml.CollectionNode, path: tuple, anchor: str | None):
        self.node, self.path, self.anchor = node, path, anchor
        self.size = 1                        # values in it so far, aliases expanded, itself included
        self.key: yaml.Node | None = None    # a mapping's key waiting for its value
        self.seen: dict[tuple, int] = {}     # a mapping's keys so far (tag, value) -> line


class _Composer:
    """Builds the node graph from the parser's events, without recursion (nesting cannot blow the stack), checking
    the bounds as it goes: one handler per kind of event."""

    def __init__(self):
        self.resolver = yaml.resolver.Resolver()
        self.lines: dict[tuple, int] = {}
        self.anchors: dict[str, tuple[yaml.Node, int]] = {}   # anchor -> (node, its size once expanded)
        self.stack: list[_Frame] = []
        self.root: yaml.Node | None = None
        self.documents = 0
        self.total = 0
        self.handlers = {yaml.DocumentStartEvent: self._document, yaml.AliasEvent: self._alias,
                         yaml.ScalarEvent: self._scalar,
                         yaml.SequenceStartEvent: self._start, yaml.MappingStartEvent: self._start,
                         yaml.SequenceEndEvent: self._end, yaml.MappingEndEvent: self._end}

    def compose(self, events) -> tuple[yaml.Node | None, dict[tuple, int]]:
        for event in events:
            handler = self.handlers.get(type(event))
            if handler is not None:
                handler(event, event.start_mark.line + 1 if event.start_mark else None)
        return self.root, self.lines

    def _document(self, event: yaml.DocumentStartEvent, line: int | None) -> None:
        self.documents += 1
        if self.documents > 1:
            raise _Refused((), "more than one YAML document (a second '---'); a config file holds one", line)

    def _alias(self, event: yaml.AliasEvent, line: int | None) -> None:
        if event.anchor not in self.anchors:
            raise _Refused(self._child_path(), f"alias *{event.anchor} refers to an anchor that is not defined "
                                               "before it (or that contains the alias itself)", line)
        node, size = self.anchors[event.anchor]
        self._add(node, size, self._child_path())

    def _scalar(self, event: yaml.ScalarEvent, line: int | None) -> None:
        path = self._child_path()
        node = yaml.ScalarNode(self._tag(yaml.ScalarNode, event, event.value), event.value, event.start_mark,
                               event.end_mark, style=event.style)
        if not self._expects_key():
            self.lines.setdefault(path, line)  # a value (a key's line is recorded by _add_key())
        if event.anchor is not None:
            self.anchors[event.anchor] = (node, 1)
        self._add(node, 1, path)

    def _start(self, event: yaml.CollectionStartEvent, line: int | None) -> None:
        path = self._child_path()
        if len(self.stack) >= MAX_YAML_DEPTH:
            raise _Refused(path, f"exceeded maximum nesting depth ({MAX_YAML_DEPTH} levels)", line)
        kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
        node = kind(self._tag(kind, event, None), [], event.start_mark, event.end_mark, flow_style=event.flow_style)
        self.lines.setdefault(path, line)
        self.stack.append(_Frame(node, path, event.anchor))

    def _end(self, event: yaml.CollectionEndEvent, line: int | None) -> None:
        frame = self.stack.pop()
        frame.node.end_mark = event.end_mark
        if frame.anchor is not None:  # registered only now: an alias inside its own anchor is refused above
            self.anchors[frame.anchor] = (frame.node, frame.size)
        self.total -= frame.size - 1  # its children were counted as they arrived; _add() counts the whole again
        self._add(frame.node, frame.size, frame.path)

    def _tag(self, kind: type[yaml.Node], event, value: str | None) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(kind, value, event.implicit)
        return tag

    def _expects_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1].node, yaml.MappingNode) and self.stack[-1].key is None

    def _child_path(self) -> tuple:
        """The key path of the node the next event starts."""
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.node, yaml.SequenceNode):
            return frame.path + (len(frame.node.value),)
        if frame.key is None:  # the next node is a key: it belongs to the mapping's own path
            return frame.path
        return frame.path + ((frame.key.value if isinstance(frame.key, yaml.ScalarNode) else "?"),)

    def _add(self, node: yaml.Node, size: int, path: tuple) -> None:
        """Place a finished node (`size` values once expanded) in its parent, or make it the root."""
        self.total += size
        if self.total > MAX_YAML_VALUES:
            raise _Refused(path, f"more than {MAX_YAML_VALUES:,} values once aliases are expanded; a config "
                                 "this large is a mistake or an attack (an alias bomb)", node.start_mark.line + 1)
        if not self.stack:
            self.root = node
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.node, yaml.SequenceNode):
            frame.node.value.append(node)
        elif frame.key is None:
            self._add_key(frame, node)
        else:
            frame.node.value.append((frame.key, node))
            frame.key = None

    def _add_key(self, frame: _Frame, node: yaml.Node) -> None:
        if isinstance(node, yaml.ScalarNode) and node.tag != _MERGE_TAG:
            seen, line = (node.tag, node.value), node.start_mark.line + 1
            if seen in frame.seen:
                raise _Refused(frame.path + (node.value,), f"duplicate key '{node.value}' (first given at line "
                                                           f"{frame.seen[seen]}); each key may appear once", line)
            frame.seen[seen] = line
            self.lines[frame.path + (node.value,)] = line
        frame.key = node
