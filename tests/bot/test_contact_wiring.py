"""The composition root wires the e-mail channel only with SMTP_URL, and the Telegram link only with the
bot and its username."""

from __future__ import annotations

import pytest

from channels.email.sender import EmailSender
from cheshire.runtime import Runtime, build_runtime
from core import linking
from core.settings import Settings, SettingsError
from tests.bot.conftest import make_settings


async def _built(database_url: str, **overrides: object) -> Runtime:
    return build_runtime(make_settings(database_url, **overrides))


async def _close(rt: Runtime) -> None:
    if rt.telegram is not None:
        await rt.telegram.close()
    await rt.db.dispose()


async def test_email_sender_and_telegram_link_are_wired_when_configured(database_url: str) -> None:
    rt = await _built(
        database_url,
        smtp_url="smtps://cheshire%40salon.test:pw-123456@mail.salon.test",
        telegram_bot_username="@LookingGlassBot",
    )
    try:
        sender = rt.senders["email"]
        assert isinstance(sender, EmailSender)
        config = sender.config
        assert (config.host, config.port, config.implicit_tls) == ("mail.salon.test", 465, True)
        assert (config.username, config.sender) == ("cheshire@salon.test", "cheshire@salon.test")
        toolbox = rt.engine.toolbox
        assert toolbox.contact_links is not None
        link = toolbox.contact_links(42)["telegram"]
        assert link.startswith("https://t.me/LookingGlassBot?start=")
        assert linking.client_from_token(rt.settings, link.rpartition("=")[2]) == 42
    finally:
        await _close(rt)


async def test_nothing_is_wired_without_the_settings(database_url: str) -> None:
    rt = await _built(database_url)
    try:
        assert "email" not in rt.senders
        assert rt.engine.toolbox.contact_links is None
    finally:
        await _close(rt)


def test_a_malformed_smtp_url_is_refused_without_echoing_it(database_url: str) -> None:
    with pytest.raises(SettingsError, match="SMTP_URL") as caught:
        Settings.load(_env_file=None, database_url=database_url, smtp_url="mail.salon.test:secret-pw-1")
    assert "secret-pw-1" not in str(caught.value)
