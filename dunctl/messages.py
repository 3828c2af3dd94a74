# Over 500 lines: message context, Babel formatting and template rendering in one module; their split along those seams is issue #22.
"""What a message says: the context a template sees, the template in the customer's language, and rendering in
a sandbox.

Templates live in the config's templates dir as `<name>.subject.j2`, `<name>.txt.j2`, optional `<name>.html.j2`
(email) and `<name>.sms.j2` (SMS), each optionally per locale: `<name>.fr.subject.j2` is found before
`<name>.subject.j2` for a customer whose Stripe preferred locale is French (`fr-CA` looks for `fr-CA`, then `fr`).
The unsuffixed files are in the sender's default language (`sender.locale`). Amounts, dates and quantities are
formatted for the locale of the template found, with Babel.

They are rendered with a sandboxed Jinja2 environment, StrictUndefined (a typo in a template is an error in
`dunctl check`, never a blank in a customer's inbox) and HTML autoescape.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from dunctl.clock import from_iso
from dunctl.errors import ConfigProblem
from dunctl.failures import (
    BANK_HARD,
    BANK_METHOD_TYPES,
    BANK_RETURNED,
    BANK_SOFT,
    INSUFFICIENT_FUNDS_CODES,
    UNKNOWN,
    shown_code,
)
from dunctl.locales import (
    candidates,
    failure_words,
    language,
    normalise,
)
from dunctl.irreversible import deadline_day
from dunctl.money import babel_locale, format_amount, format_day, format_money
from dunctl.offsets import Offset, parse_offset
from dunctl.recipients import current_email, resolve_recipients

EMAIL_PARTS = ("subject", "txt", "html")
_HELD: dict[Path, Templates] = {}   # directories whose templates a running simulation holds (Templates.held)
# Japanese (and Chinese) set no space between sentences or words. A line break inside a paragraph of an HTML
# template, or a space that joins two of its sentences, shows in the mail client as a gap ("でした。 この"): between
# two such characters it goes. In the text part a line break is a real one and stays.
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
# The character before the gap is matched and put back (r"\1") rather than looked behind for: a lookbehind is
# tried at every position of the message, 3x the CPU (35 us of an English email's HTML against 11).
_CJK_GAP = re.compile(rf"([{_CJK}])[ \t\r\n]+(?=[{_CJK}])")
_CJK_INLINE_GAP = re.compile(rf"([{_CJK}])[ \t]+(?=[{_CJK}])")


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
        # Jinja2 loads with the first template, not with the CLI: a tick with nothing to send never pays for it.
        from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape

        self.directory = directory
        self._names = names   # the files, when known not to change under this object (for_dir)
        self._compiled: dict = {}   # file name -> Template, skipping Jinja's locked cache lookup on each render
        self.env = _environment_class()(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=names is None,
        )
        self.env.filters["money"] = lambda amount, currency: format_amount(int(amount), currency)

    def file(self, name: str, kind: str, suffix: str = "") -> Path:
        return self.directory / _filename(name, kind, suffix)

    def exists(self, name: str, kind: str, suffix: str = "") -> bool:
        if self._names is not None:
            return _filename(name, kind, suffix) in self._names
        return self.file(name, kind, suffix).exists()

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
        filename = _filename(name, kind, suffix)
        template = self._compiled.get(filename)
        if template is None:
            template = self.env.get_template(filename)
            if self._names is not None:   # the files cannot change under this object: keep it (see for_dir)
                self._compiled[filename] = template
        return template.render(**context)

    def render_email(self, name: str, context: dict, *, locale: str | None = None) -> tuple[str, str, str | None]:
        """Subject, text and HTML in one language: the HTML part only when that language has one (never an
        English HTML part under a French text). `locale` overrides the customer's: an internal message (the account
        manager's) is written in the sender's language, `sender.locale`."""
        suffix, context = self._context_for(name, "txt", context, locale)
        # Collapse line breaks and runs of ASCII spaces only: the no-break spaces Babel puts inside amounts stay.
        subject = re.sub(r"[ \t\r\n]+", " ", self.render(name, "subject", context, suffix)).strip()
        text = _CJK_INLINE_GAP.sub(r"\1", self.render(name, "txt", context, suffix))
        html = self.render(name, "html", context, suffix) if self.exists(name, "html", suffix) else None
        return subject, text, _CJK_GAP.sub(r"\1", html) if html else None

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
        from jinja2 import TemplateError

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


@functools.cache
def _environment_class():
    from jinja2.sandbox import SandboxedEnvironment

    class Environment(SandboxedEnvironment):
        def make_globals(self, d):
            # A plain dict where Jinja makes a ChainMap over the environment's globals: every render copies a
            # template's globals, and copying a ChainMap is a quarter of the time a message takes to render. Nothing
            # here changes the environment's globals once templates load (which is what the ChainMap is for).
            return {**self.globals, **(d or {})}

        def getattr(self, obj, attribute):
            # `inv.amount` on a plain dict: the sandbox tries the attribute first and pays for an AttributeError on
            # every lookup (most of a template's). A dict's attributes are exactly dict's own, so a name that is not
            # one of them can only be an item: the same answer, without the exception.
            if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
                if attribute in obj:
                    return obj[attribute]
                return self.undefined(obj=obj, name=attribute)
            return super().getattr(obj, attribute)

    return Environment


_DICT_ATTRIBUTES = frozenset(dir(dict))


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


# -- SMS length ----------------------------------------------------------------------------------------------

# GSM 03.38: the basic set (one septet each) and the extension table (escape + septet: two each).
_GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsSize:
    encoding: str        # 'GSM-7' or 'UCS-2'
    length: int          # in the encoding's units (septets, or UTF-16 code units)
    limit: int           # what one segment holds: 160 or 70

    @property
    def budget(self) -> int:
        """Segments a dunning text may take: two in GSM-7. In UCS-2 (Japanese) a real hosted-invoice link alone
        (~160 characters) fills more than two 67-unit segments, so the budget is the link plus one segment."""
        return 2 if self.encoding == "GSM-7" else 3

    @property
    def segments(self) -> int:
        if self.length <= self.limit:
            return 1
        multipart = 153 if self.encoding == "GSM-7" else 67
        return -(-self.length // multipart)


def sms_sizes(templates: Templates, name: str, contexts: list) -> list[tuple[str, SmsSize]]:
    """The longest text of SMS template `name` in each locale it has (`dunctl check` shows them): what a
    customer's phone receives with a realistic link, GSM-7 or UCS-2."""
    sizes = []
    for suffix in templates.locales(name):
        if not templates.exists(name, "sms", suffix):
            continue
        texts = []
        for context in contexts:
            tag = suffix or context.get("locale") or "en"
            localized = context.localized(tag) if isinstance(context, MessageContext) else context
            for privacy in ("standard", "strict"):
                shown = strict_sms(localized) if privacy == "strict" else {**localized, "sms_privacy": privacy}
                texts.append(" ".join(templates.render(name, "sms", shown, suffix).split()))
        sizes.append((suffix or "default", max((sms_size(t) for t in texts), key=lambda z: z.length)))
    return sizes


def sample_link(n: int) -> str:
    """A link as long as a real one: Stripe's hosted-invoice URLs are about 157 characters (160 here), so a
    length check with a short sample passes texts that reach customers in two or three segments."""
    head = f"https://invoice.stripe.com/i/acct_1SampleAcct00000/test_{n}_"
    return head + "x" * (160 - len(head))


def sms_size(text: str) -> SmsSize:
    """How a text travels: GSM-7 when every character is in the GSM alphabet (160 a segment), else UCS-2 (70)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        return SmsSize("GSM-7", sum(2 if c in _GSM_EXTENDED else 1 for c in text), 160)
    return SmsSize("UCS-2", len(text.encode("utf-16-le")) // 2, 70)


def recipient_list(rule: str | list[str], customer: dict | None, invoice: dict) -> list[str]:
    """The To addresses for `rule` (one rule, an address, or a list of them), one address per item (never joined
    into one string: parsing 'a, b' back depends on the Python version). `dunctl.recipients.resolve_recipients`
    also gives cc and the addresses it rejected, with reasons."""
    return resolve_recipients(_Rules(rule), customer, invoice).to


@dataclass(frozen=True)
class _Rules:
    to: str | list[str] | None
    cc: str | list[str] | None = None


# -- the context a template sees -----------------------------------------------------------------------------


# Segments and sequences whose cases are large or strategic: their messages are written for a finance team that
# is owed a personal tone, never "this happens, it's usually quick to fix".
HIGH_VALUE = frozenset({"human-review", "high-value"})
# Steps whose action the customer notices as a consequence of not paying, in the words templates branch on.
CONSEQUENCES = ("pause_subscription", "cancel_subscription", "mark_uncollectible", "hand_off")


@dataclass
class CasePart:
    """One more case of the same customer and currency, for a message that covers several invoices."""

    case: dict
    invoice: dict
    payment_method: dict | None = None
    update_link: str | None = None
    sequence: object | None = None


class MessageContext(dict):
    """A template context formatted for one locale, which can re-format itself for another (the locale of the
    template that is actually found: a French customer's numbers in an English template read wrong)."""

    def __init__(self, data: dict, rebuild):
        super().__init__(data)
        self._rebuild = rebuild

    def localized(self, tag: str) -> dict:
        return self if tag == self.get("locale") else self._rebuild(tag)


def _json(value, default):
    if value is None or value == "":
        return default
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return default


def customer_kind(customer: dict | None, invoice: dict | None = None) -> dict:
    """How to address the customer: a business by its company name ("Hello Wayne Health"), a person by first
    name. A business is a customer with a billing contact, a metadata company, or a Stripe business_name."""
    customer = customer or {}
    metadata = _json(customer.get("metadata"), {})
    name = (customer.get("name") or (invoice or {}).get("customer_name") or "").strip()
    company = (customer.get("business_name") or metadata.get("company") or metadata.get("company_name")
               or metadata.get("business_name") or "").strip()
    business = bool(company or metadata.get("billing_email") or metadata.get("billing_emails"))
    if business and not company:
        company = name            # a B2B customer's Stripe name is the account's name, e.g. "Wayne Health"
    return {"business": business, "company_name": company if business else "",
            "name": name, "first_name": "" if business or not name else name.split()[0]}


def consequence(sequence, first_failed: datetime | None, now: datetime) -> dict | None:
    """What the case's own sequence does next if the invoice stays unpaid, and when: the first
    pause/cancel/write-off/hand-off step still ahead of `now`."""
    if sequence is None or first_failed is None:
        return None
    steps = sequence.get("steps", []) if isinstance(sequence, dict) else sequence.steps
    for step in steps:
        action = step["action"] if isinstance(step, dict) else step.action
        if action not in CONSEQUENCES:
            continue
        at = step["at"] if isinstance(step, dict) else step.at
        offset = at if isinstance(at, Offset) else parse_offset(at["text"] if isinstance(at, dict) else at)
        when = offset.after(first_failed)
        if when > now:
            return {"action": action, "at": when}
    return None


def _sequence_of(case: dict, sequence):
    if sequence is not None:
        return sequence
    return _json(case.get("sequence_def"), None)


def build_context(*, case: dict, invoice: dict, customer: dict | None, payment_method: dict | None,
                  update_link: str | None, company: str, now: datetime, sequence=None,
                  default_locale: str = "en", timezone: str | None = None, also: list[CasePart] = (),
                  locale: str | None = None, reason_shown: bool = True, account: str | None = None,
                  open_invoices: list[dict] | None = None) -> MessageContext:
    """Everything a template may use, formatted for the customer's locale (or `locale`).

    `invoices` lists every invoice the message covers (this case's, then `also`'s: further cases of the same
    customer and currency), each with its amount, failure in plain words and its own pay link; `totals` is the
    sum per currency. The single-invoice names (`invoice`, `amount`, `failure`, ...) describe the first invoice.
    `sequence` (default: the case's stored sequence) gives the final notice its consequence and date.
    `reason_shown` False (a message that also reaches people other than the payer's billing contacts) words every
    failure neutrally: "insufficient funds" is the payer's business."""
    parts = [CasePart(case, invoice, payment_method, update_link, sequence), *also]
    for part in parts[1:]:
        if part.case["customer_id"] != case["customer_id"]:
            raise ValueError(f"case {part.case.get('invoice_id')} is another customer's; one message covers one customer")
    preferred = normalise((customer or {}).get("preferred_locale"))
    zone = (customer or {}).get("timezone") or timezone or "UTC"

    def build(tag: str) -> MessageContext:
        found = _context(parts, customer, company, now, tag, preferred, default_locale, zone, reason_shown, account)
        return MessageContext({**found, "statement": _statement(open_invoices or [], now, found["locale"], zone)},
                              build)

    return build(normalise(locale) or preferred or normalise(default_locale) or "en")


def _context(parts: list[CasePart], customer: dict | None, company: str, now: datetime, tag: str,
             preferred: str | None, default_locale: str, zone: str, reason_shown: bool = True,
             account: str | None = None) -> dict:
    from babel.numbers import format_decimal

    loc = babel_locale(tag, default_locale)
    lang, code = loc.language, str(loc)   # formatting below is keyed by the identifier: worked out once
    first = parts[0]
    try:
        tz = ZoneInfo(zone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        tz = ZoneInfo("UTC")

    def day(moment: datetime) -> str:
        return format_day(moment.astimezone(tz), code)

    def deadline(moment: datetime) -> str:
        # a reader takes the day named as "by the end of it", which dunctl honours (dunctl/irreversible.py)
        return format_day(deadline_day(moment, zone), code)

    invoices = []
    totals: dict[str, int] = {}
    earliest = None
    for part in parts:
        case, invoice = part.case, part.invoice
        currency = invoice["currency"]
        first_failed = from_iso(case["first_failed_at"])
        lines = _json(invoice.get("lines"), [])
        decline = _json(invoice.get("decline"), {})
        failure_type = case["failure_type"] or UNKNOWN
        method = part.payment_method or {}
        shown = [{**line, "amount": format_money(line["amount"], currency, code),
                  "quantity_text": format_decimal(line["quantity"], locale=loc) if line.get("quantity") else ""}
                 for line in lines]
        then = consequence(_sequence_of(case, part.sequence), first_failed, now)
        if then and (earliest is None or then["at"] < earliest["at"]):
            earliest = then
        totals[currency] = totals.get(currency, 0) + invoice["amount_remaining"]
        invoices.append({
            "id": invoice["id"],
            "number": invoice["number"] or invoice["id"],
            "currency": currency,
            "amount": format_money(invoice["amount_remaining"], currency, code),
            "amount_due": format_money(invoice["amount_due"], currency, code),
            "amount_remaining": format_money(invoice["amount_remaining"], currency, code),
            "hosted_invoice_url": invoice["hosted_invoice_url"],
            "dashboard_url": dashboard_url(invoice["id"], bool(invoice.get("livemode")), account),
            "pay_link": part.update_link or invoice["hosted_invoice_url"] or "",
            "usage_based": any(line.get("metered") for line in lines),
            "lines": shown,
            "usage_lines": [line for line in shown if line.get("metered")],
            "failure": {"type": failure_type, "plain": _plain(failure_type, decline, lang, reason_shown),
                        "code": shown_code(decline)},
            "payment_method": _method(method, invoice, failure_type),
            "first_failed": day(first_failed) if first_failed else "",
            "days_since_failure": max(0, (now - first_failed).days) if first_failed else 0,
            "attempts": case["attempts"],
            "consequence": {"action": then["action"], "on": deadline(then["at"])} if then else None,
            **_terms(invoice, now, day, lambda amount: format_money(amount, currency, code)),
        })
    one = invoices[0]
    links = {inv["pay_link"] for inv in invoices}
    segments = {p.case.get("segment") for p in parts} | {p.case.get("sequence") for p in parts}
    who = customer_kind(customer, first.invoice)
    return {
        "company": company,
        "locale": tag,
        "language": lang,
        "customer": {"id": first.case["customer_id"], **who,
                     "email": current_email(customer, first.invoice), "locale": preferred,
                     "billing_contacts": resolve_recipients(_Rules("billing_contact"), customer, first.invoice).to},
        "invoices": invoices,
        "count": len(invoices),
        "totals": [{"currency": c, "amount": format_money(v, c, code)} for c, v in sorted(totals.items())],
        "total": ", ".join(format_money(v, c, code) for c, v in sorted(totals.items())),
        "tone": "high_value" if segments & HIGH_VALUE else "standard",
        "consequence": {"action": earliest["action"], "on": deadline(earliest["at"])} if earliest else None,
        "today": day(now),
        # The first (or only) invoice under the names single-invoice templates use.
        "invoice": one,
        "amount": one["amount"],
        "failure": one["failure"],
        "payment_method": one["payment_method"],
        "days_since_failure": max(inv["days_since_failure"] for inv in invoices),
        "attempts": one["attempts"],
        "update_link": one["pay_link"] if len(links) == 1 else "",
        "case": {"segment": first.case["segment"], "sequence": first.case["sequence"]},
        "pause_lifted": False,   # the thank-you for a payment: dunctl lifted its pause (tick/actions.py)
        "follow_up": False,      # the customer already got a message about this case (tick/actions.py)
        "sent": [],              # what was sent and tried on these cases, for internal messages (tick/actions.py)
    }


def _statement(rows: list[dict], now: datetime, tag: str, zone: str) -> list[dict]:
    """The customer's open invoices (`open_invoices`: dunctl/ledger/receivables.py open_invoices_of) per currency,
    formatted for the message's locale, with a total per currency: a statement of account (never one total)."""
    code = str(babel_locale(tag))
    try:
        tz = ZoneInfo(zone)
    except (ValueError, KeyError):
        tz = ZoneInfo("UTC")
    sections: dict[str, dict] = {}
    for row in rows:
        currency, due = row["currency"], from_iso(row["due"])
        section = sections.setdefault(currency, {"currency": currency, "lines": [], "total_minor": 0})
        section["lines"].append({"number": row["number"] or row["id"], "due_date": format_day(due.astimezone(tz), code),
                                 "days_overdue": (now - due).days, "link": row.get("hosted_invoice_url") or "",
                                 "amount": format_money(row["amount_remaining"], currency, code)})
        section["total_minor"] += row["amount_remaining"]
    for section in sections.values():
        section["total"] = format_money(section.pop("total_minor"), section["currency"], code)
    return [sections[c] for c in sorted(sections)]


def _terms(invoice: dict, now: datetime, day, money) -> dict:
    """A net-terms invoice's facts for its reminders (dunctl/receivables): due date, days past it (negative
    before), the PDF link, and what was paid already (a partial payment: the message says what is left)."""
    due = from_iso(invoice.get("due_date"))
    paid = invoice.get("amount_paid") or 0
    return {"due_date": day(due) if due else "", "days_overdue": (now - due).days if due else 0,
            "days_until_due": max(0, -((now - due) // timedelta(days=1))) if due else 0,
            "invoice_pdf": invoice.get("invoice_pdf") or "", "amount_paid": money(paid),
            "partial": bool(paid and invoice["amount_remaining"])}


def _plain(failure_type: str, decline: dict, lang: str, reason_shown: bool) -> str:
    """The failure in the customer's words: neutral when others than the payer read it, and "insufficient
    funds" on a bank debit only when the bank said so (not for could_not_process or SEPA MS03)."""
    if not reason_shown:
        return failure_words(UNKNOWN, lang)
    if failure_type == BANK_SOFT and not INSUFFICIENT_FUNDS_CODES & {v for v in decline.values() if isinstance(v, str)}:
        return failure_words(BANK_RETURNED, lang)
    return failure_words(failure_type, lang)


def _method(method: dict, invoice: dict, failure_type: str) -> dict:
    """The payment method, with `kind` (card | bank) that the advice follows: a bank debit's customer checks the
    account or mandate and can pay another way; only a card's is told to use another card."""
    kind = method.get("type") or invoice.get("payment_method_type")
    bank = kind in BANK_METHOD_TYPES or failure_type in (BANK_SOFT, BANK_HARD)
    return {"type": kind, "kind": "bank" if bank else "card", "brand": method.get("brand"),
            "last4": method.get("last4")}


def strict_sms(context: dict) -> dict:
    """The context an SMS sees under `sms.privacy: strict`: no name and no amount (a text is read on a lock
    screen). Templates branch on `sms_privacy`; one that still names the customer or an amount fails `check`."""
    customer = {k: v for k, v in context["customer"].items() if k not in ("name", "first_name", "company_name",
                                                                          "email")}
    invoices = [{k: v for k, v in inv.items() if not k.startswith("amount") and k != "lines" and k != "usage_lines"}
                for inv in context["invoices"]]
    dropped = ("amount", "total", "totals", "invoice", "customer", "invoices")
    return {**{k: v for k, v in context.items() if k not in dropped}, "customer": customer, "invoices": invoices,
            "invoice": invoices[0], "sms_privacy": "strict"}


def check_templates(templates_dir: Path, used: dict[str, str], company: str, default_locale: str = "en"
                    ) -> list[ConfigProblem]:
    """What `dunctl check` renders: every used template ({name: 'email' | 'sms'}) in every locale it has files
    for, against every sample case; a problem names the file that does not render."""
    return Templates(templates_dir).check(used, sample_contexts(company, default_locale))


def sms_notes(templates_dir: Path, used: dict[str, str], company: str, default_locale: str = "en") -> list[str]:
    """One line per SMS template: per locale, its encoding and segments with a realistic link (what `check`
    shows, so a longer translation or a non-GSM character is seen before it doubles the bill)."""
    templates, contexts = Templates(templates_dir), sample_contexts(company, default_locale)
    return [f"SMS {name} with a {len(sample_link(1))}-character link: " + "; ".join(
                f"{suffix} {size.encoding} {size.length} characters, {size.segments} segment(s)"
                for suffix, size in sms_sizes(templates, name, contexts))
            for name, kind in sorted(used.items()) if kind == "sms"]


_SAMPLE_SEQUENCE = {"name": "standard", "steps": [
    {"id": "notice", "at": "30m", "action": "email"}, {"id": "final-notice", "at": "12d", "action": "email"},
    {"id": "suspend", "at": "21d", "action": "pause_subscription"}]}


def sample_contexts(company: str = "Acme", default_locale: str = "en", locale: str | None = None
                    ) -> list[MessageContext]:
    """Sample cases for `dunctl check`: one per failure type (templates branch on it), a business on a
    high-value invoice, and one message covering two invoices, so every branch a template takes is rendered."""
    from dunctl.failures import FAILURE_TYPES

    samples = [sample_context(company, failure_type, default_locale=default_locale, locale=locale)
               for failure_type in FAILURE_TYPES]
    samples.append(sample_context(company, "card_soft", business=True, segment="human-review",
                                  default_locale=default_locale, locale=locale))
    samples.append(sample_context(company, "card_update", invoices=2, default_locale=default_locale, locale=locale))
    return samples


def sample_context(company: str = "Acme", failure_type: str = "card_soft", *, business: bool = False,
                   segment: str = "default", invoices: int = 1, default_locale: str = "en",
                   locale: str | None = None, currency: str = "usd", amount: int = 12900) -> MessageContext:
    """A representative case for `dunctl check` and the template tests: usage-based, with a card."""
    def case_and_invoice(n: int) -> tuple[dict, dict]:
        case = {"customer_id": "cus_sample", "invoice_id": f"in_sample{n}", "first_failed_at": "2026-01-01T00:00:00Z",
                "failure_type": failure_type, "attempts": 2, "segment": segment, "sequence": "standard",
                "sequence_def": json.dumps(_SAMPLE_SEQUENCE)}
        usage = amount * 3000 // 12900
        invoice = {"id": f"in_sample{n}", "number": f"ACME-004{n}", "currency": currency,
                   "amount_due": amount * n, "amount_remaining": amount * n,
                   "hosted_invoice_url": sample_link(n),
                   # a net-terms invoice's (dunctl/receivables): its due date and PDF; a card invoice has none
                   "due_date": "2026-01-10T00:00:00Z", "invoice_pdf": sample_link(n) + "/pdf",
                   "customer_name": "Ada Lovelace", "customer_email": "ada@example.com",
                   "payment_method_type": "card",
                   "decline": json.dumps({"decline_code": "insufficient_funds"}),
                   "lines": json.dumps([
                       {"description": "Pro plan", "amount": (amount - usage) * n, "quantity": 1, "metered": False},
                       {"description": "API calls over plan", "amount": usage * n, "quantity": 30000,
                        "metered": True}])}
        return case, invoice

    customer = {"name": "Wayne Health" if business else "Ada Lovelace", "email": "ada@example.com",
                "metadata": json.dumps({"billing_email": "ap@wayne.test"} if business else {}),
                "preferred_locale": locale}
    method = {"type": "card", "brand": "visa", "last4": "4242"}
    case, invoice = case_and_invoice(1)
    also = [CasePart(*case_and_invoice(n), method, sample_link(n)) for n in range(2, invoices + 1)]
    statement = [{"id": f"in_sample{n}", "number": f"ACME-003{n}", "currency": currency, "amount_remaining": amount * n,
                  "due": f"2025-12-{10 + n}T00:00:00Z", "hosted_invoice_url": sample_link(n)} for n in (1, 2)]
    return build_context(case=case, invoice=invoice, customer=customer, payment_method=method,
                         update_link=sample_link(1), company=company,
                         now=datetime.fromisoformat("2026-01-13T00:00:00+00:00"), default_locale=default_locale,
                         also=also, locale=locale, open_invoices=statement)


def dashboard_url(invoice_id: str, livemode: bool, account: str | None = None) -> str:
    """The invoice in the Stripe Dashboard: the connected account's when dunctl follows one, in test or live."""
    return ("https://dashboard.stripe.com" + (f"/{account}" if account else "") + ("" if livemode else "/test")
            + f"/invoices/{invoice_id}")


def escalation_text(case: dict, invoice: dict, customer: dict | None, actions: list[dict], reason: str, *,
                    now: datetime | None = None, sequence=None, account: str | None = None) -> str:
    """What a person needs to take a case over, as plain prose (an email, a Slack post and a webhook's text
    alike; no markup): who owes what in which currency, for how many days, what was sent and tried, what happens
    next and when, and where the invoice is in the Stripe Dashboard."""
    currency = invoice["currency"]
    decline = _json(invoice.get("decline"), {})
    first_failed = from_iso(case["first_failed_at"])
    days = max(0, (now - first_failed).days) if now and first_failed else None
    kind = customer_kind(customer, invoice)
    who = kind["company_name"] or kind["name"] or case["customer_id"]
    contacts = resolve_recipients(_Rules("billing_contact"), customer, invoice).to
    paragraphs = [f"{reason}."] if reason else []   # no reason: one invoice of a customer's escalation
    paragraphs += [
        f"{who} ({case['customer_id']}) owes {format_amount(invoice['amount_remaining'], currency)} "
        f"{currency.upper()} on invoice {invoice['number'] or invoice['id']} (of "
        f"{format_amount(invoice['amount_due'], currency)} {currency.upper()} due). Billing contact: "
        f"{', '.join(contacts) if contacts else 'none on file'}.",
        f"The payment first failed on {first_failed:%Y-%m-%d}"
        + (f", {days} days overdue" if days is not None else "")
        + f" ({case['failure_type']}, decline code {shown_code(decline) or 'none'}), "
        f"after {case['attempts']} payment attempt(s).",
        _history(actions),
        _next_consequence(sequence, first_failed, now),
        f"Stripe Dashboard: {dashboard_url(invoice['id'], bool(invoice.get('livemode')), account)}",
    ]
    if invoice.get("hosted_invoice_url"):
        paragraphs.append(f"The customer pays on: {invoice['hosted_invoice_url']}")
    return "\n\n".join(paragraphs)


def escalation_for_customer(reason: str, customer_id: str, customer: dict | None,
                            invoices: list[tuple[dict, str]]) -> str:
    """One customer's escalations as one message: the reason, the total owed per currency (amounts in different
    currencies are never added), then each invoice's own escalation text, as (invoice row, text) pairs."""
    totals: dict[str, int] = {}
    for invoice, _ in invoices:
        totals[invoice["currency"]] = totals.get(invoice["currency"], 0) + invoice["amount_remaining"]
    kind = customer_kind(customer, invoices[0][0])
    who = kind["company_name"] or kind["name"] or customer_id
    owed = "; ".join(f"{format_amount(amount, currency)} {currency.upper()}" for currency, amount in totals.items())
    per = " (a total per currency)" if len(totals) > 1 else ""
    head = f"{reason}.\n\n{who} ({customer_id}) has {len(invoices)} unpaid invoices. Total owed{per}: {owed}."
    parts = [f"Invoice {invoice['number'] or invoice['id']}:\n\n{text}" for invoice, text in invoices]
    return "\n\n".join([head, *parts])


def _history(actions: list[dict]) -> str:
    """What was sent and tried, oldest first, in one sentence."""
    # what the customer received (not notes to colleagues) and what was charged
    done = [a for a in actions if a["status"] == "done" and (a["action"] == "retry" or (
        a["action"] in ("email", "sms") and a.get("audience") != "internal"))]
    if not done:
        return "Nothing has been sent to the customer or retried yet."
    said = [f"{a['action']} {a['step_id']} on {str(a['finished_at'] or '')[:10]}" for a in done]
    sent = sum(a["action"] != "retry" for a in done)
    return f"So far {sent} message(s) sent and {len(done) - sent} retry(ies): " + "; ".join(said) + "."


_CONSEQUENCE_WORDS = {"pause_subscription": "the subscription is paused",
                      "cancel_subscription": "the subscription is cancelled",
                      "mark_uncollectible": "the invoice is written off as uncollectible",
                      "hand_off": "the invoice is handed to collections"}


def _next_consequence(sequence, first_failed: datetime | None, now: datetime | None) -> str:
    then = consequence(sequence, first_failed, now) if now else None
    if not then:
        return "No pause, cancellation or write-off is scheduled: what happens next is a person's decision."
    return f"Next, unless the invoice is paid: {_CONSEQUENCE_WORDS[then['action']]} on {then['at']:%Y-%m-%d}."
