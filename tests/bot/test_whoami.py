"""How Kimmie finds her Telegram id: an unknown user's /start (while nobody is configured) and /whoami
show the chat's numeric id."""

from __future__ import annotations

from core.db.database import Database
from tests.bot.conftest import CUSTOMER, KIMMIE, Harness, build_harness, make_settings
from tests.fakes.telegram_api import FakeTelegramAPI


async def test_unknown_user_finds_their_id_with_start_and_whoami(
    db: Database, database_url: str, fake_tg: FakeTelegramAPI
) -> None:
    # Setting up: the token is set, nobody is Kimmie yet.
    h = await build_harness(
        db, make_settings(database_url, telegram_kimmie_chat_id=None, telegram_admin_ids=[]), fake_tg
    )
    try:
        await h.feed(h.message(4242, "/start"))
        said = [c.text for c in h.fake.calls_to("sendMessage") if c.chat_id == 4242]
        assert any("Your Telegram id is 4242" in t and "TELEGRAM_KIMMIE_CHAT_ID=4242" in t for t in said)
        h.fake.clear()
        await h.feed(h.message(4242, "/whoami"))
        assert "Your Telegram id is 4242" in h.fake.last("sendMessage").text
    finally:
        await h.bot.session.close()


async def test_whoami_once_set_up(harness: Harness) -> None:
    h = harness
    await h.feed(h.message(CUSTOMER, "/start"))
    assert not any("Telegram id" in c.text for c in h.fake.calls_to("sendMessage"))  # customers: no id
    await h.feed(h.message(CUSTOMER, "/whoami"))
    assert h.fake.last("sendMessage").text == f"Your Telegram id is {CUSTOMER}."
    await h.feed(h.message(KIMMIE, "/whoami"))
    assert f"Your Telegram id is {KIMMIE}: you are set up" in h.fake.last("sendMessage").text
