"""How things look in Kimmie's chat: pure functions from read models to HTML text (keyboards are in
bot/keyboards.py).

Everything that came from a customer or the database is escaped: names like "<Bella & Co>" are shown,
not interpreted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from bot.views import CardData, ClientCard, ClientView, ConversationView, PetView
from core.db.models import GroomingDesign
from core.notify.facts import (
    CHANNEL_LABEL,
    STATUS_WORDS,
    channel_label,
    digest_intro,
    fmt_money,
    handle_text,
    history_text,
    pet_traits,
    vaccination,
)
from core.types import AppointmentStatus, Booking

STATUS_EMOJI = {
    AppointmentStatus.REQUESTED: "⏳",
    AppointmentStatus.CONFIRMED: "✅",
    AppointmentStatus.DECLINED: "❌",
    AppointmentStatus.CANCELLED: "🚫",
    AppointmentStatus.EXPIRED: "⌛",
    AppointmentStatus.COMPLETED: "✔",
    AppointmentStatus.NO_SHOW: "👻",
}
STATUS_LABEL = {status: f"{STATUS_EMOJI[status]} {words}" for status, words in STATUS_WORDS.items()}


def e(value: object) -> str:
    return escape(str(value), quote=False)


def fmt_slot(start: datetime, end: datetime, tz: ZoneInfo) -> str:
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    return f"{local_start:%a %-d %b}, {local_start:%H:%M}–{local_end:%H:%M}"


def fmt_day(day: date) -> str:
    return f"{day:%A %-d %B}"


def vaccination_text(pet: PetView, today: date) -> str:
    text, expired = vaccination(pet, today)
    return f"⚠ {e(text)}" if expired else e(text)


def pet_line(pet: PetView, today: date, *, show_id: bool = False) -> str:
    details = ", ".join(e(f) for f in pet_traits(pet))
    line = (
        f"🐾 <b>{e(pet.name)}</b>"
        + (f" (pet #{pet.id})" if show_id else "")
        + (f" — {details}" if details else "")
    )
    extra = [e(f"temperament: {pet.temperament}") if pet.temperament else "", vaccination_text(pet, today)]
    if pet.health_notes:
        extra.append(e(f"health: {pet.health_notes}"))
    shown = "; ".join(x for x in extra if x)
    return line + ("\n    " + shown if shown else "")


def who_lines(client: ClientView, channel: str) -> list[str]:
    """Who and how to reach them: name, handles, phone, e-mail, history."""
    who = f"👤 <b>{e(client.label)}</b> · via {e(channel)}"
    reach = [handle_text(c, h) for c, h in client.handles] + [x for x in (client.phone, client.email) if x]
    lines = [who]
    if reach:
        lines.append("📇 " + " · ".join(e(x) for x in reach))
    lines.append(f"📊 {history_text(client.visits, client.no_shows)}")
    return lines


def booking_card_text(card: CardData, tz: ZoneInfo, *, note: str | None = None) -> str:
    b = card.booking
    today = datetime.now(tz).date()
    channel = channel_label(b.source_channel.value if b.source_channel else None)
    lines = [
        f"<b>Booking request #{b.id}</b>",
        *who_lines(card.client, channel),
        *[pet_line(p, today) for p in card.pets],
    ]
    if not card.pets and b.pet_names:
        lines.append("🐾 " + e(", ".join(b.pet_names)))
    lines += [
        f"✂ {e(b.service_name)} · {fmt_money(b.price_min_cents, b.price_max_cents)}",
        f"🗓 {fmt_slot(b.start, b.end, tz)}",
    ]
    if not b.availability_verified:
        lines.append("⚠ calendar not checked — make sure the slot is free")
    if b.notes:
        lines.append(f"📝 {e(b.notes)}")
    if card.deposit is not None:
        lines.append(f"💳 {e(card.deposit.line)}")
    lines.append(f"Status: {STATUS_LABEL.get(b.status, e(b.status))}")
    if note:
        lines.append(f"\n<i>{e(note)}</i>")
    return "\n".join(lines)


def reminder_digest_text(items: Sequence[CardData], tz: ZoneInfo) -> str:
    """Kimmie's daily list: each visit with who, how to reach them, dogs and time."""
    lines = [e(digest_intro(len(items)))]
    for card in items:
        b = card.booking
        channel = channel_label(b.source_channel.value if b.source_channel else None)
        dogs = ", ".join(p.name for p in card.pets) or ", ".join(b.pet_names) or "—"
        lines += ["", f"<b>#{b.id}</b> {fmt_slot(b.start, b.end, tz)} · {e(b.service_name)} · 🐾 {e(dogs)}"]
        lines += who_lines(card.client, channel)
    return "\n".join(lines)


def agenda_text(
    title: str, bookings: Iterable[Booking], pets: dict[int, PetView], clients: dict[int, str], tz: ZoneInfo
) -> str:
    by_day: dict[date, list[Booking]] = {}
    for b in sorted(bookings, key=lambda b: b.start):
        by_day.setdefault(b.start.astimezone(tz).date(), []).append(b)
    if not by_day:
        return f"<b>{e(title)}</b>\nNothing booked."
    lines = [f"<b>{e(title)}</b>"]
    for day, items in by_day.items():
        lines.append(f"\n<b>{fmt_day(day)}</b>")
        for b in items:
            start, end = b.start.astimezone(tz), b.end.astimezone(tz)
            status = "" if b.status == AppointmentStatus.CONFIRMED else f" [{e(b.status)}]"
            lines.append(
                f"{start:%H:%M}–{end:%H:%M} {e(b.service_name)}{status} · {e(clients.get(b.client_id, ''))}"
            )
            for pet_id, name in zip(b.pet_ids, b.pet_names, strict=False):
                pet = pets.get(pet_id)
                facts = [pet.breed, pet.size_class, pet.temperament] if pet else []
                detail = ", ".join(e(f) for f in facts if f)
                lines.append(f"   🐾 {e(name)}" + (f" ({detail})" if detail else ""))
            if b.notes:
                lines.append(f"   📝 {e(b.notes)}")
            if not b.availability_verified:
                lines.append("   ⚠ calendar not checked")
    return "\n".join(lines)


def client_card_text(card: ClientCard, tz: ZoneInfo) -> str:
    c = card.client
    today = datetime.now(tz).date()
    lines = [f"<b>{e(c.label)}</b> · client #{c.id}"]
    contact = " · ".join(e(x) for x in [handle_text(ch, h) for ch, h in c.handles] + [c.phone, c.email] if x)
    if contact:
        lines.append(contact)
    lines.append(history_text(c.visits, c.no_shows))
    if c.channels:
        lines.append("Writes on: " + ", ".join(CHANNEL_LABEL.get(ch, ch) for ch in c.channels))
    if c.notes:
        lines.append(f"📝 {e(c.notes)}")
    lines += [pet_line(p, today, show_id=True) for p in card.pets] or ["No pets on file."]
    if card.history:
        lines.append("\n<b>Appointments</b>")
        for b in sorted(card.history, key=lambda b: b.start, reverse=True)[:10]:
            lines.append(
                f"#{b.id} {fmt_slot(b.start, b.end, tz)} · {e(b.service_name)} · "
                f"{e(', '.join(b.pet_names))} · {e(b.status)}"
            )
    else:
        lines.append("No appointments yet.")
    return "\n".join(lines)


def previews_text(designs: Sequence[GroomingDesign], pets: Sequence[PetView], tz: ZoneInfo) -> str:
    """A client's Looking Glass previews, newest first: pet, style, angle, status, cost, booking."""
    names = {p.id: p.name for p in pets}
    lines = ["<b>Looking Glass previews</b>"]
    for d in designs:
        when = d.created_at.astimezone(tz).strftime("%b %d")
        booked = f" · appt #{d.appointment_id}" if d.appointment_id else ""
        pet = e(names.get(d.pet_id, f"pet #{d.pet_id}"))
        style = f"{e(d.style_code or '?')} ({e(d.angle)})"
        lines.append(f"#{d.id} {pet} · {style} · {e(d.status)} · ${d.cost_usd:.2f} · {when}{booked}")
    return "\n".join(lines)


AUTHOR_ICON = {"customer": "👤", "assistant": "🤖", "kimmie": "✂", "system": "⚙"}


def conversation_text(
    view: ConversationView, messages: Sequence[tuple[str, str, datetime]], tz: ZoneInfo
) -> str:
    channel = CHANNEL_LABEL.get(view.channel, view.channel)
    lines = [f"💬 <b>{e(view.client.name or 'Customer')}</b> on {e(channel)} (chat #{view.id})"]
    if not messages:
        lines.append("No messages yet.")
    for author, text, at in messages:
        snippet = text if len(text) <= 500 else text[:500] + "…"
        lines.append(f"{AUTHOR_ICON.get(author, '•')} {at.astimezone(tz):%d %b %H:%M} {e(snippet)}")
    return "\n".join(lines)


def handover_text(view: ConversationView, reason: str) -> str:
    channel = CHANNEL_LABEL.get(view.channel, view.channel)
    return f"🙋 <b>{e(view.client.name or 'A customer')}</b> on {e(channel)} needs you\nReason: {e(reason)}"


def day_range(kind: str, tz: ZoneInfo, now: datetime | None = None) -> tuple[date, date, str]:
    today = (now or datetime.now(tz)).astimezone(tz).date()
    if kind == "tomorrow":
        day = today + timedelta(days=1)
        return day, day, f"Tomorrow, {fmt_day(day)}"
    if kind == "week":
        return today, today + timedelta(days=6), "The next 7 days"
    return today, today, f"Today, {fmt_day(today)}"
