"""The words the layouts put around every message, per language: the templates directory's `_words.html.j2`, read
once per set of templates and given to every template as the global `words`.

Built once, not per email: a dict literal in a layout is built again on every render, and an `{% import %}` of
the file looks it up in Jinja's locked cache and reads its attributes through the sandbox's checks on every
render (it measured about 3 us an email slower than the literal); a plain dict among the globals costs nothing per
render, and the sandbox reads a plain dict's items directly (dunctl/messages/templates.py)."""

from __future__ import annotations

WORDS_FILE = "_words.html.j2"


def words_of(env) -> dict:
    """The top-level variables `WORDS_FILE` sets, as one plain dict; {} when the directory has no such file (a
    template that uses `words` then fails `dunctl check`, as any undefined name does)."""
    from jinja2 import TemplateNotFound   # lazy: see dunctl/lazy.py

    try:
        module = env.get_template(WORDS_FILE).module
    except TemplateNotFound:
        return {}
    return {name: value for name, value in vars(module).items() if not name.startswith("_")}
