"""Approving without Telegram (issue 14, section 6): Kimmie's e-mail carries signed, single-use,
expiring Approve / Decline links to a page on PUBLIC_BASE_URL that shows the card and asks for one
confirming tap. The process is the real composition root; the mail goes through the fake SMTP server;
the page is the runtime's own aiohttp app."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from aiohttp.test_utils import TestClient

from core.db.models import Appointment, utcnow
from core.notify import links
from tests.bot.test_admin_email import Salon, body, salon, smtp  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
BASE = "https://cheshire.example"


async def _mailed_links(salon: Salon) -> tuple[int, dict[str, str]]:  # noqa: F811
    await salon.start(telegram_bot_token=None, public_base_url=BASE)
    booking, _ = await salon.booking_request()
    await salon.run_jobs()
    [mail] = salon.mails()
    found = dict(re.findall(r"^(Approve|Decline): (\S+)\s*$", body(mail), re.MULTILINE))
    assert set(found) == {"Approve", "Decline"}, body(mail)
    tokens = {k.lower(): parse_qs(urlparse(v).query)["t"][0] for k, v in found.items()}
    assert all(v.startswith(f"{BASE}/kimmie/decide?t=") for v in found.values())
    return booking.id, tokens


async def _status(salon: Salon, appointment_id: int) -> tuple[str, str | None]:  # noqa: F811
    async with salon.db.transaction() as session:
        row = await session.get_one(Appointment, appointment_id)
        return row.status, row.decline_code


async def _client(salon: Salon, aiohttp_client: Any) -> TestClient[Any, Any]:  # noqa: F811
    assert salon.rt is not None
    client: TestClient[Any, Any] = await aiohttp_client(salon.rt.app)
    return client


async def test_approve_link_shows_the_card_and_decides_only_on_the_confirming_post(
    salon: Salon,  # noqa: F811
    aiohttp_client: Any,
) -> None:
    appointment_id, tokens = await _mailed_links(salon)
    client = await _client(salon, aiohttp_client)

    for _ in range(2):  # a mail scanner, then Kimmie: opening the link changes nothing
        page = await client.get("/kimmie/decide", params={"t": tokens["approve"]})
        assert page.status == 200
        html = await page.text()
        assert f"Booking request #{appointment_id}" in html and "Bella" in html and "Approve" in html
        assert "<form method=post" in html
    assert await _status(salon, appointment_id) == ("requested", None)

    done = await client.post("/kimmie/decide", data={"t": tokens["approve"], "action": "approve"})
    assert done.status == 200 and "Approved" in await done.text()
    assert await _status(salon, appointment_id) == ("confirmed", None)

    again = await client.post("/kimmie/decide", data={"t": tokens["approve"]})
    assert again.status == 409 and "already used" in await again.text()
    opened = await client.get("/kimmie/decide", params={"t": tokens["approve"]})
    assert opened.status == 409
    # The other link cannot undo it: the request is decided.
    late = await client.post("/kimmie/decide", data={"t": tokens["decline"], "reason": "other"})
    assert late.status == 409 and "already confirmed" in await late.text()
    assert await _status(salon, appointment_id) == ("confirmed", None)


async def test_decline_link_asks_the_reason_and_declines(salon: Salon, aiohttp_client: Any) -> None:  # noqa: F811
    appointment_id, tokens = await _mailed_links(salon)
    client = await _client(salon, aiohttp_client)
    html = await (await client.get("/kimmie/decide", params={"t": tokens["decline"]})).text()
    assert "Decline: fully booked" in html and "Decline: not a fit" in html
    done = await client.post("/kimmie/decide", data={"t": tokens["decline"], "reason": "fully_booked"})
    assert done.status == 200 and "Declined" in await done.text()
    assert await _status(salon, appointment_id) == ("declined", "fully_booked")


async def test_a_forged_or_expired_link_changes_nothing(salon: Salon, aiohttp_client: Any) -> None:  # noqa: F811
    appointment_id, tokens = await _mailed_links(salon)
    client = await _client(salon, aiohttp_client)
    body_, _, mac = tokens["approve"].rpartition(".")
    other = body_.replace(f"{appointment_id}.approve", f"{appointment_id + 1}.approve")
    for forged in (f"{body_}.{'0' * len(mac)}", f"{other}.{mac}", "", "1.approve.2.3", "x" * 300):
        for response in (
            await client.get("/kimmie/decide", params={"t": forged}),
            await client.post("/kimmie/decide", data={"t": forged}),
        ):
            assert response.status == 403, forged
    assert salon.rt is not None
    settings = salon.rt.settings
    stale = links.make_token(settings, appointment_id, "approve", now=utcnow() - timedelta(hours=25))
    assert (await client.get("/kimmie/decide", params={"t": stale})).status == 410
    expired = await client.post("/kimmie/decide", data={"t": stale})
    assert expired.status == 410 and "expired" in await expired.text()
    assert await _status(salon, appointment_id) == ("requested", None)


async def test_without_a_public_url_the_mail_has_no_links(salon: Salon) -> None:  # noqa: F811
    await salon.start(telegram_bot_token=None)
    await salon.booking_request()
    await salon.run_jobs()
    [mail] = salon.mails()
    assert "kimmie/decide" not in body(mail)
