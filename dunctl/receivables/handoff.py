"""The `hand_off` step: hand a case to collections. It sends the case's collections packet (dunctl/receivables/
packet.py) to `collections.dir` and/or `collections.webhook`, whichever are set, and marks the case "with
collections": a person holds it, no more automated messages. A case below `collections.min_amount` for its
currency, or fewer than `collections.after` past its due date, is skipped with the reason."""

from __future__ import annotations

from dunctl.channels import sending_clock
from dunctl.effect import Outcome, Prepared, skipped
from dunctl.tick.changes import HandToPerson, Hold, Note
from dunctl.tick.context import TickContext
from dunctl.tick.effects import CaseEffect

WITH_COLLECTIONS = "with collections"


def not_eligible(settings, case, now) -> str | None:
    floor = settings.min_amount.get(case.currency)
    if floor is not None and case.amount_remaining < floor:
        return f"{case.amount_remaining} {case.currency} left is below collections.min_amount ({floor})"
    if now - case.first_failed_at < settings.after:
        return f"not yet {settings.after.days} days past due (collections.after)"
    return None


def hand_off(ctx: TickContext, effect: CaseEffect) -> Prepared:
    b = effect.bundle
    settings = ctx.config.file.collections
    why = not_eligible(settings, b.case, ctx.now)
    if why:
        return skipped(why)
    directory = (ctx.config.base_dir / settings.dir).resolve() if settings.dir is not None else None

    def deliver() -> Outcome:
        from dunctl.receivables.packet import packet, write   # lazy: see dunctl/lazy.py
        story = packet(ctx.ledger, ctx.config, b.invoice.id)
        # the files first: a failing webhook then fails the step (the executor retries it) with the packet on disk
        # and the case not yet handed off, so nothing is lost
        paths = write(story, directory) if directory is not None else []
        done = [f"collections packet written to {directory}"] if paths else []
        if settings.webhook is not None:
            done.append(_post(ctx, settings.webhook, story, effect.key))
        where = f"packet {paths[0].name}" if paths else "packet sent to collections.webhook"
        because = f"{WITH_COLLECTIONS} since {ctx.now:%Y-%m-%d} ({where}): a person closes it"
        return Outcome("done", "; ".join(done),
                       changes=[HandToPerson(b.case.id, ctx.now), Hold(b.case.id, because),
                                Note(b.case.id, ctx.now, "collections", f"handed to collections: {because}")])

    targets = [str(directory)] if directory is not None else []
    targets += ["collections.webhook"] if settings.webhook is not None else []
    return Prepared(f"hand to collections: packet to {' and '.join(targets)}", deliver)


def _post(ctx: TickContext, webhook, story: dict, key: str) -> str:
    """POST the packet as a signed `collections.hand_off` event to `collections.webhook`, with the webhook
    channel's transport; what to add to the step's detail."""
    from dunctl.channels.webhook import WebhookTransport   # lazy: see dunctl/lazy.py

    environ = ctx.channels.environ if ctx.channels is not None else {}
    transport = WebhookTransport(webhook, environ, clock=sending_clock(ctx.now))
    return transport.post("collections.hand_off", story, key, ctx.now).detail
