"""The Jinja environment every template is compiled and rendered in: a sandbox, with dunctl's filters and globals.

Apart from dunctl/messages/templates.py (which finds a template in the customer's language and renders it) so that
it needs nothing but Jinja and markupsafe: the wheel's build compiles the shipped templates in this very
environment (hatch_build.py, dunctl/messages/compiled.py `ship`), so that a first run on a machine loads them
instead of compiling them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from html import unescape as html_unescape

import markupsafe
from jinja2 import BaseLoader, StrictUndefined, Template, select_autoescape
from jinja2.bccache import BytecodeCache
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

_DICT_ATTRIBUTES = frozenset(dir(dict))
_TAG = re.compile(r"<[^>]*>")
_ESCAPE_INNER = getattr(markupsafe, "_escape_inner", None)   # markupsafe 3's escaping of a plain str (C)


def environment(loader: BaseLoader, money: Callable, *, auto_reload: bool,
                bytecode_cache: BytecodeCache | None) -> Environment:
    """A new environment over `loader`, formatting amounts with `money` (amount, currency) -> text. Everything that
    decides the code Jinja generates for a template is set here (the options, the filters' names and what each is
    passed), so a template compiled by the wheel's build is the one a process would compile."""
    env = Environment(
        loader=loader,
        undefined=StrictUndefined,
        # asked for each template's name on every render (a context each part, and a block call): once a name
        autoescape=functools.lru_cache(maxsize=None)(
            select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=auto_reload,
        bytecode_cache=bytecode_cache,
    )
    env.filters["money"] = money
    env.filters["striptags"] = _striptags
    env.globals["preheader_of"] = preheader_of
    return env


class EscapingTemplate(Template):
    @classmethod
    def from_code(cls, environment, code, globals, uptodate=None):
        template = super().from_code(environment, code, globals, uptodate)
        # the namespace the compiled code runs in: its `escape` is what each {{ }} of an HTML template calls
        template.root_render_func.__globals__["escape"] = _escape
        return template


class Environment(SandboxedEnvironment):
    template_class = EscapingTemplate

    def make_globals(self, d):
        # A plain dict where Jinja makes a ChainMap over the environment's globals: every render copies a
        # template's globals, and copying a ChainMap is a quarter of the time a message takes to render. Nothing
        # here changes the environment's globals once templates load (which is what the ChainMap is for).
        return {**self.globals, **(d or {})}

    def get_template(self, name, parent=None, globals=None):
        # `extends` and `include` ask for their template on every render (three times an email), through
        # Jinja's locked LRU cache: a weakref and a scan of its queue each time, 3 us. Templates that cannot
        # change (no auto_reload: Templates.for_dir) are kept in a plain dict instead.
        if self.auto_reload or globals is not None or not isinstance(name, str):
            return super().get_template(name, parent, globals)
        held = self.__dict__.setdefault("_held_templates", {})
        template = held.get(name)
        if template is None:
            template = held[name] = super().get_template(name, parent)
        return template

    def call(__self, __context, __obj, *args, **kwargs):   # Jinja's names: no keyword of a template clashes
        # The HTML frame calls `preheader_of` on every email: dunctl's own plain function, safe and taking no
        # context, called directly rather than through the sandbox's check and Jinja's inspection of what to
        # pass it. A call inside a loop or block (keywords) or of anything else goes the sandbox's way.
        if __obj is preheader_of and not kwargs:
            return preheader_of(*args)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj, attribute):
        # `inv.amount` on a plain dict: the sandbox tries the attribute first and pays for an AttributeError on
        # every lookup (most of a template's). A dict's attributes are exactly dict's own, so a name that is not
        # one of them can only be an item: the same answer, without the exception.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def _escape(value) -> Markup:
    """markupsafe's `escape`, with a plain str's Markup made directly: `Markup(...)` runs a Python `__new__` that asks
    the text it was just given for `__html__` again, for each of the 15 values an HTML email prints (7% of its
    render). Anything else, or another markupsafe, goes markupsafe's own way."""
    if type(value) is str and _ESCAPE_INNER is not None:
        return str.__new__(Markup, _ESCAPE_INNER(value))
    return escape(value)


def _striptags(value) -> str:
    """Jinja's `striptags` (markupsafe's `Markup.striptags`: tags removed, whitespace collapsed, entities decoded),
    with the tags removed by one regex pass rather than a Python step and a new string per tag: the HTML frame
    strips every email's body twice (its preheader). Text with a comment goes markupsafe's own way (an unclosed
    comment keeps the rest as it is); without one, a tag is `<` to the next `>`, as there."""
    if hasattr(value, "__html__"):
        value = value.__html__()
    value = str(value)
    if "<!--" in value:
        return Markup(value).striptags()
    return html_unescape(" ".join(_TAG.sub("", value).split()))


def preheader_of(body, mark: str) -> tuple[str, bool]:
    """The HTML frame's preheader (`_mail.html.j2`): the text of the body after its greeting (the first paragraph),
    or of all of it when it has one paragraph; and whether the body already invites a reply: the language's `mark`
    in that text or in the greeting's, lower-cased. What the frame worked out with `split`, `striptags` and `lower`
    filters, each a call through the sandbox."""
    greeting, closed, rest = str(body).partition("</p>")
    text = _striptags(rest if closed else greeting)
    return text, mark in text.lower() or bool(closed) and mark in _striptags(greeting).lower()
