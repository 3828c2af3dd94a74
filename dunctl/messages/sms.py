"""How long an SMS is (GSM-7 or UCS-2, and in how many segments) and what it may show under `sms.privacy:
strict`."""

from __future__ import annotations

from dataclasses import dataclass


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
