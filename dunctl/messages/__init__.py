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

from dunctl.messages.case import (CONSEQUENCES, HIGH_VALUE, CasePart, StepsAsRead, consequence, customer_kind,
                                  dashboard_url, recipient_list)
from dunctl.messages.check import check_templates, sms_notes, sms_sizes
from dunctl.messages.context import MessageContext, build_context
from dunctl.messages.escalation import escalation_for_customer, escalation_text
from dunctl.messages.samples import sample_context, sample_contexts
from dunctl.messages.sms import SmsSize, sample_link, sms_size, strict_sms
from dunctl.messages.templates import EMAIL_PARTS, Templates

__all__ = [
    "CONSEQUENCES", "EMAIL_PARTS", "HIGH_VALUE", "CasePart", "MessageContext", "SmsSize", "StepsAsRead", "Templates",
    "build_context", "check_templates", "consequence", "customer_kind", "dashboard_url", "escalation_for_customer",
    "escalation_text", "recipient_list", "sample_context", "sample_contexts", "sample_link", "sms_notes",
    "sms_size", "sms_sizes", "strict_sms",
]
