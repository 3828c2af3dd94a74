"""Templates found in the customer's language and rendered in a sandboxed Jinja2 environment (StrictUndefined,
HTML autoescape), compiled once per state of the templates directory."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

from jinja2 import FileSystemLoader, Template, TemplateError

from dunctl.errors import ConfigProblem
from dunctl.locales import candidates, language, normalise
from dunctl.messages.compiled import template_cache
from dunctl.messages.context import MessageContext
from dunctl.messages.environment import environment
from dunctl.messages.sms import sample_link, sms_size, strict_sms
from dunctl.messages.words import words_of
from dunctl.money import format_amount

EMAIL_PARTS = ("subject", "txt", "html")
_HELD: dict[Path, Templates] = {}   # directories whose templates a running simulation holds (Templates.held)
# Japanese (and Chinese) set no space between sentences or words. A line break inside a paragraph of an HTML
# template, or a space that joins two of its sentences, shows in the mail client as a gap ("でした。 この"): between
# two such characters it goes. In the text part a line break is a real one and stays.
# The character before the gap is matched and put back (r"\1") rather than looked behind for: a lookbehind is
# tried at every position of the message, 3x the CPU (35 us of an English email's HTML against 11).
# Matched in the message's UTF-8 (U+3000-30FF, U+3400-4DBF, U+4E00-9FFF, U+FF00-FFEF, each as its bytes): the same
# gaps (a lead byte never continues a character, so a match starts on a character as it did in the text), and the
# pattern compiles in microseconds where the same classes over str took 7 ms each (Python's compiler marks every
# one of their 28,000 characters in a table), at the first message of every process.
_CJK = (rb"(?:\xe3[\x80-\x83\x90-\xbf][\x80-\xbf]|\xe4(?:[\x80-\xb5\xb8-\xbf][\x80-\xbf]|\xb6[\x80-\xbf])"
        rb"|[\xe5-\xe9][\x80-\xbf][\x80-\xbf]|\xef(?:[\xbc-\xbe][\x80-\xbf]|\xbf[\x80-\xaf]))")
_CJK_GAP = re.compile(rb"(" + _CJK + rb")[ \t\r\n]+(?=" + _CJK + rb")")
_CJK_INLINE_GAP = re.compile(rb"(" + _CJK + rb")[ \t]+(?=" + _CJK + rb")")
# The first byte of those characters in UTF-8 (U+3000-U+9FFF: E3-E9; U+FF00-U+FFEF: EF), as ints: `int in bytes`
# is one memchr, where `b"\xe3" in bytes` first tries the operand as an int and formats a TypeError to drop it
# (eight of them an email)
_CJK_LEAD_BYTES = (0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEF)


class Templates:
    @classmethod
    def for_dir(cls, directory: Path) -> Templates:
        """The templates of `directory` as its files are now: compiled templates are reused (across the ticks of
        one process) for as long as no file is added, removed or edited; any change makes a fresh set. One
        directory listing per call, instead of a file check per template per message."""
        held = _HELD.get(Path(directory))
        if held is not None:
            return held
        return cls._for_listing(Path(directory), _listing(Path(directory)))

    @classmethod
    @contextlib.contextmanager
    def held(cls, directory: Path) -> Iterator[None]:
        """Inside this block `for_dir(directory)` gives the templates as they were when it began, without
        listing the directory again: a simulation's thousand ticks render what it started with (a listing of
        the starter's 200 files on every tick was 4% of a simulation's CPU)."""
        directory = Path(directory)
        _HELD[directory] = cls.for_dir(directory)
        try:
            yield
        finally:
            _HELD.pop(directory, None)

    @classmethod
    @functools.lru_cache(maxsize=16)
    def _for_listing(cls, directory: Path, listing: frozenset) -> Templates:
        return cls(directory, names=frozenset(name for name, _, _ in listing))

    def __init__(self, directory: Path, names: frozenset[str] | None = None):
        self.directory = directory
        self._names = names   # the files, when known not to change under this object (for_dir)
        self._compiled: dict = {}   # file name -> Template, skipping Jinja's locked cache lookup on each render
        self._picked: dict = {}     # (name, kind, preferred, default locale) -> pick's answer, when _names is known
        self._mentioned: dict = {}  # (name, words, locales) and (words, files) -> mentions' answer
        self._texts: dict = {}      # file name -> its text (None: unreadable), for mentions
        self._files_of: dict = {}   # template name -> [(locale suffix, file name)], for mentions
        self._scanned: dict = {}    # (file name, words) -> True, or the templates it names: for mentions
        self.env = environment(FileSystemLoader(str(directory)),
                               lambda amount, currency: format_amount(int(amount), currency),
                               auto_reload=names is None,
                               bytecode_cache=template_cache())   # compiled once per source, not once per process

    def file(self, name: str, kind: str, suffix: str = "") -> Path:
        return self.directory / _filename(name, kind, suffix)

    def exists(self, name: str, kind: str, suffix: str = "") -> bool:
        if self._names is not None:
            return _filename(name, kind, suffix) in self._names
        return self.file(name, kind, suffix).exists()

    def mentions(self, name: str, words: tuple[str, ...], locales: tuple[str | None, ...] | None = None) -> bool:
        """Whether a file of the template `name` (any part) or a file it extends, includes or imports has one of
        `words` in its text: of every language, or with `locales`, of those a message for any of them can be
        written in (each one's best match as `pick` looks for it, and the unsuffixed default). Where none has, no
        render of `name` can read a variable of that name (a template reaches a variable only by its name: the
        sandbox gives it no view of its context), and a caller need not work it out (a message's consequence,
        its history). A key of a value (`invoice.consequence`) is read by its name too, unless a template builds
        the key from pieces at render time (`invoice["conse" ~ "quence"]`), which this cannot see. True when the
        answer cannot be known: files that may change under this object, a template named by an expression, a
        file that cannot be read. Each file is read once per object, and only when asked about."""
        if self._names is None:
            return True
        key = (name, words, locales)
        found = self._mentioned.get(key)
        if found is None:
            if name not in self._files_of:
                self._files_of[name] = [(suffix, n) for n in sorted(self._names)
                                        if (suffix := _suffix_of(n, name)) is not None]
            suffixes = None if locales is None else {""} | {s for tag in locales for s in candidates(tag, "en")}
            files = tuple(n for suffix, n in self._files_of[name] if suffixes is None or suffix in suffixes)
            found = self._mentioned.get((words, files))   # the same files for another language
            if found is None:
                found = self._mentioned[words, files] = self._any_mentions(list(files), words)
            self._mentioned[key] = found
        return found

    def _any_mentions(self, files: list[str], words: tuple[str, ...]) -> bool:
        seen: set[str] = set()
        while files:
            file = files.pop()
            if file in seen or file not in self._names:
                continue
            seen.add(file)
            found = self._scanned.get((file, words))
            if found is None:
                found = self._scanned[file, words] = self._scan(file, words)
            if found is True:
                return True
            files.extend(found)
        return False

    def _scan(self, file: str, words: tuple[str, ...]) -> bool | tuple[str, ...]:
        """True when `file` has one of `words`, names a template by an expression or cannot be read; else the
        templates it names (extends, includes, imports)."""
        text = self._text(file)
        if text is None or re.search(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", text):
            return True
        named = []
        for target in _REFERENCE.findall(text):
            literal = _LITERAL.fullmatch(target)
            if literal is None:
                return True
            named.append(literal.group(1) or literal.group(2))
        return tuple(named)

    def _text(self, file: str) -> str | None:
        """A template file's text (None when it cannot be read), read once: the layouts are asked about for every
        template that extends them."""
        if file not in self._texts:
            try:
                self._texts[file] = (self.directory / file).read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                self._texts[file] = None
        return self._texts[file]

    def locales(self, name: str) -> list[str]:
        """The locale suffixes `name` has files for ('' is the unsuffixed default)."""
        found = {""}
        for path in self.directory.glob(f"{name}.*.j2"):
            middle = path.name[len(name) + 1:-len(".j2")].split(".")
            if len(middle) == 2:
                found.add(middle[0])
        return sorted(found)

    def pick(self, name: str, kind: str, context: dict, locale: str | None = None) -> tuple[str, str]:
        """The locale suffix of the template to use for `kind` ('txt' stands for the whole email) and the locale
        to format it in: the customer's own tag when the template is in the customer's language ('fr-CA' numbers
        in the 'fr' template), else the template's, with the default language for the unsuffixed file."""
        preferred = normalise(locale) or (context.get("customer") or {}).get("locale")
        default = normalise(context.get("default_locale")) or "en"
        if self._names is None:
            return self._pick(name, kind, preferred, default)
        key = (name, kind, preferred, default)
        found = self._picked.get(key)
        if found is None:   # the files cannot change under this object: once per template and language
            found = self._picked[key] = self._pick(name, kind, preferred, default)
        return found

    def _pick(self, name: str, kind: str, preferred: str | None, default: str) -> tuple[str, str]:
        for suffix in candidates(preferred, default):
            if self.exists(name, kind, suffix):
                same = language(preferred) == language(suffix)
                return suffix, (preferred if same and preferred.startswith(suffix) else suffix)
        return "", (preferred if language(preferred) == language(default) else default)

    def _context_for(self, name: str, kind: str, context: dict, locale: str | None = None) -> tuple[str, dict]:
        suffix, tag = self.pick(name, kind, context, locale)
        if isinstance(context, MessageContext):
            context = context.localized(tag)
        return suffix, context

    def render(self, name: str, kind: str, context: dict, suffix: str | None = None, *,
               locale: str | None = None) -> str:
        """Render one part. With `suffix` None the customer's language (or `locale`) is looked up; a given suffix
        is used as is."""
        if suffix is None:
            suffix, context = self._context_for(name, kind, context, locale)
        return self._render(self._template(_filename(name, kind, suffix)), self._variables(context))

    def _variables(self, context: dict) -> dict:
        """What a template sees: the environment's globals, then the context."""
        return {**self._globals(), **context}

    def _globals(self) -> dict:
        if "words" not in self.env.globals:   # before any template loads: each keeps a copy of the globals
            self.env.globals["words"] = words_of(self.env)
        return self.env.globals

    def _template(self, filename: str) -> Template:
        template = self._compiled.get(filename)
        if template is None:
            self._globals()   # complete before the template keeps its copy
            template = self.env.get_template(filename)
            if self._names is not None:   # the files cannot change under this object: keep it (see for_dir)
                self._compiled[filename] = template
        return template

    def _render(self, template: Template, variables: dict) -> str:
        """`template.render(variables)` for `variables` that already hold the globals: Jinja's render copies
        its arguments three times (keywords, a dict of them, the globals merged in), for each of an email's three
        parts; here the globals are merged in once per email and the dict is shared, which Jinja only reads (a
        template's own `set`s go into its context's vars)."""
        try:
            return self.env.concat(template.root_render_func(template.new_context(variables, shared=True)))
        except Exception:
            self.env.handle_exception()   # raises the error with the template's file and line, as render does

    def render_email(self, name: str, context: dict, *, locale: str | None = None) -> tuple[str, str, str | None]:
        """Subject, text and HTML in one language: the HTML part only when that language has one (never an
        English HTML part under a French text). `locale` overrides the customer's: an internal message (the account
        manager's) is written in the sender's language, `sender.locale`."""
        suffix, context = self._context_for(name, "txt", context, locale)
        variables = self._variables(context)   # once for the three parts
        # Collapse line breaks and runs of ASCII spaces only: the no-break spaces Babel puts inside amounts stay.
        subject = _SPACES.sub(" ", self._render(self._template(_filename(name, "subject", suffix)), variables)).strip()
        text = _close_gaps(_CJK_INLINE_GAP, self._render(self._template(_filename(name, "txt", suffix)), variables))
        html = (self._render(self._template(_filename(name, "html", suffix)), variables)
                if self.exists(name, "html", suffix) else None)
        return subject, text, _close_gaps(_CJK_GAP, html) if html else None

    def render_sms(self, name: str, context: dict, privacy: str = "standard") -> str:
        suffix, context = self._context_for(name, "sms", context)
        context = strict_sms(context) if privacy == "strict" else {**context, "sms_privacy": "standard"}
        # Every Unicode space becomes a plain one: Babel's no-break spaces are not in the GSM-7 alphabet and would
        # turn a French text into UCS-2 (70 characters a segment instead of 160).
        return " ".join(self.render(name, "sms", context, suffix).split())

    def check(self, names: dict[str, str], contexts: list[dict]) -> list[ConfigProblem]:
        """Render every named template ({name: 'email' | 'sms'}) in every locale it has files for, against each
        sample context (one per kind of case, so every branch a template takes is rendered); one problem per file
        at most. An SMS must also fit one segment in both privacy modes."""
        problems = []
        for name, kind in sorted(names.items()):
            parts = ("sms",) if kind == "sms" else EMAIL_PARTS
            for suffix in self.locales(name):
                for part in parts:
                    if not self.exists(name, part, suffix):
                        continue
                    file = self.file(name, part, suffix)
                    for context in contexts:
                        tag = suffix or normalise(context.get("default_locale")) or "en"
                        localized = context.localized(tag) if isinstance(context, MessageContext) else context
                        problem = self._check_one(name, part, suffix, localized, file)
                        if problem:
                            problems.append(problem)
                            break
        return problems

    def _check_one(self, name, part, suffix, context, file) -> ConfigProblem | None:
        what = f"a {context['failure']['type']} case" + (f" ({context['sample']})" if context.get("sample") else "")
        try:
            if part != "sms":
                self.render(name, part, context, suffix)
                return None
            for privacy in ("standard", "strict"):
                what = what.split(" with sms.privacy")[0] + f" with sms.privacy {privacy}"
                sms_context = strict_sms(context) if privacy == "strict" else {**context, "sms_privacy": privacy}
                text = " ".join(self.render(name, "sms", sms_context, suffix).split())
                size = sms_size(text)
                if size.segments > size.budget:
                    return ConfigProblem(str(file), "", f"for {what} the text is "
                                         f"{size.length} {size.encoding} characters with a {len(sample_link(1))}-"
                                         f"character link, {size.segments} SMS segments; at most {size.budget} "
                                         f"({size.encoding}): {text!r}")
        except TemplateError as exc:
            return ConfigProblem(str(file), "", f"does not render for {what}: {exc}", getattr(exc, "lineno", None))
        except UnicodeDecodeError as exc:
            return ConfigProblem(str(file), "", f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset "
                                 f"{exc.start}; save the file as UTF-8")
        except Exception as exc:  # noqa: BLE001 - template code can raise anything (1/0, '%s' % x): report it
            return ConfigProblem(str(file), "", f"does not render for {what}: {type(exc).__name__}: {exc}")
        return None


# What a tag that brings in another template names it by (`mentions`): a literal, or anything else up to the tag's
# end or the keyword after the name
_REFERENCE = re.compile(r"\{%[-+]?\s*(?:extends|include|import|from)\s+(.*?)\s*(?:\b(?:import|as|with|without|"
                        r"ignore)\b.*?)?[-+]?%\}", re.DOTALL)
_LITERAL = re.compile(r""""([^"\\]*)"|'([^'\\]*)'""")
_SPACES = re.compile(r"[ \t\r\n]+")


def _close_gaps(gap: re.Pattern, text: str) -> str:
    """`text` without the gaps `gap` finds between CJK characters. Most messages have no CJK character at all:
    looking for one's first byte in the UTF-8 (a few memchr) costs a third of running the pattern over an
    English HTML email (about 4 us against 13)."""
    if text.isascii():   # most English emails: no encoding at all
        return text
    data = text.encode("utf-8", "surrogatepass")
    if not any(lead in data for lead in _CJK_LEAD_BYTES):
        return text
    return gap.sub(rb"\1", data).decode("utf-8", "surrogatepass")


def _suffix_of(file: str, name: str) -> str | None:
    """The locale suffix of `file` when it is one of the template `name`'s ('' unsuffixed), else None."""
    if not file.startswith(name + ".") or not file.endswith(".j2"):
        return None
    middle = file[len(name) + 1:-len(".j2")].split(".")
    return "" if len(middle) == 1 else middle[0] if len(middle) == 2 else None


def _filename(name: str, kind: str, suffix: str = "") -> str:
    return f"{name}.{suffix}.{kind}.j2" if suffix else f"{name}.{kind}.j2"


def _listing(directory: Path) -> frozenset[tuple[str, int, int]]:
    """(name, size, modification time) of every template file: what tells one state of the directory from
    another."""
    try:
        with os.scandir(directory) as entries:
            return frozenset((e.name, (st := e.stat()).st_size, st.st_mtime_ns)
                             for e in entries if e.name.endswith(".j2") and e.is_file())
    except OSError:
        return frozenset()
