"""GET/POST /kimmie/decide: the page behind the Approve / Decline links of Kimmie's e-mail.

GET shows the card (the same lines as the e-mail) and one confirming button, and changes nothing:
mail scanners and link previews open links too. POST, with the token from the page's form, checks the
link again (core/notify/links.py: signature 403, expired 410, used 409), spends it and decides in one
unit of work, and shows the outcome. A decision the booking rules refuse (already decided, slot taken)
rolls back with the link unspent and says why.
"""

from __future__ import annotations

import logging
from html import escape

from aiohttp import web

from channels.email.admin_mail import booking_lines
from core.booking import texts
from core.booking.api import BookingError, BookingService, NotFoundError
from core.db.database import Database
from core.db.models import utcnow
from core.notify import links, views
from core.notify.facts import STATUS_WORDS
from core.settings import Settings
from core.types import AppointmentStatus

log = logging.getLogger(__name__)

DECIDE_DB_KEY = web.AppKey("decide_db", Database)
DECIDE_SETTINGS_KEY = web.AppKey("decide_settings", Settings)
DECIDE_BOOKING_KEY = web.AppKey("decide_booking", BookingService)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}"
    "pre{white-space:pre-wrap;background:#f6f6f6;padding:1rem;border-radius:.5rem}"
    "button{font-size:1.1rem;padding:.7rem 1.2rem;margin:.3rem .3rem 0 0;border-radius:.5rem}"
)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    html = (
        f"<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style><h1>{escape(title)}</h1>{body}"
    )
    # Never cached, never indexed: each view reflects the booking as it is now.
    headers = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}
    return web.Response(text=html, content_type="text/html", status=status, headers=headers)


def _refused(exc: links.LinkError) -> web.Response:
    return _page("Nothing was changed", f"<p>{escape(str(exc))}</p>", exc.status)


def _form(token: str, action: links.LinkAction) -> str:
    hidden = f"<input type=hidden name=t value='{escape(token, quote=True)}'>"
    if action == "approve":
        buttons = "<button name=action value=approve>✅ Approve</button>"
    else:
        buttons = "".join(
            f"<button name=reason value={code}>❌ Decline: {escape(title.lower())}</button>"
            for code, title in texts.DECLINE_REASONS.items()
        )
    return f"<form method=post action='{links.PATH}'>{hidden}{buttons}</form>"


async def decide_get(request: web.Request) -> web.Response:
    settings, db = request.app[DECIDE_SETTINGS_KEY], request.app[DECIDE_DB_KEY]
    token = request.query.get("t", "")
    try:
        claim = links.read_token(settings, token, now=utcnow())
        async with db.transaction() as session:
            await links.check_unused(session, claim)
            card = await views.load_card(session, request.app[DECIDE_BOOKING_KEY], claim.appointment_id)
    except links.LinkError as exc:
        return _refused(exc)
    except NotFoundError:
        return _page("Nothing was changed", "<p>This booking no longer exists.</p>", 404)
    lines = escape("\n".join(booking_lines(card, settings.tz)))
    if card.booking.status != AppointmentStatus.REQUESTED:
        status = STATUS_WORDS.get(card.booking.status, str(card.booking.status))
        note = f"<p>Already decided: {escape(status)}. Nothing to do.</p>"
        return _page(f"Booking request #{card.booking.id}", f"<pre>{lines}</pre>{note}")
    verb = "Approve" if claim.action == "approve" else "Decline"
    ask = f"<p>{verb} this request? One tap below decides; this page alone changed nothing.</p>"
    return _page(
        f"Booking request #{card.booking.id}", f"<pre>{lines}</pre>{ask}{_form(token, claim.action)}"
    )


async def decide_post(request: web.Request) -> web.Response:
    settings, db = request.app[DECIDE_SETTINGS_KEY], request.app[DECIDE_DB_KEY]
    booking = request.app[DECIDE_BOOKING_KEY]
    form = await request.post()
    token, reason = str(form.get("t", "")), str(form.get("reason", "")) or None
    if reason is not None and reason not in texts.DECLINE_REASONS:
        return _page("Nothing was changed", "<p>Unknown reason.</p>", 400)
    now = utcnow()
    try:
        claim = links.read_token(settings, token, now=now)
        async with db.transaction() as session:
            await links.use(session, claim, now=now)
            if claim.action == "approve":
                await booking.approve(session, appointment_id=claim.appointment_id)
                outcome = "Approved: the customer is being told."
            else:
                await booking.decline(
                    session, appointment_id=claim.appointment_id, reason_code=reason or "other"
                )
                outcome = "Declined: the customer is being told."
    except links.LinkError as exc:
        return _refused(exc)
    except NotFoundError:
        return _page("Nothing was changed", "<p>This booking no longer exists.</p>", 404)
    except BookingError as exc:
        return _page("Nothing was changed", f"<p>{escape(str(exc))}</p>", 409)
    log.info("booking decided from an e-mail link", extra={"action": claim.action})
    return _page("Done", f"<p>{escape(outcome)}</p>")


def setup_routes(app: web.Application, *, db: Database, settings: Settings, booking: BookingService) -> None:
    app[DECIDE_DB_KEY] = db
    app[DECIDE_SETTINGS_KEY] = settings
    app[DECIDE_BOOKING_KEY] = booking
    app.router.add_get(links.PATH, decide_get, allow_head=False)
    app.router.add_post(links.PATH, decide_post)
