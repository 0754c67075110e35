"""The website chat in a real browser: Debian's Chromium driven by Playwright against the running
service (the page at `/` hosting the widget). Type a message, see the reply, tap a quick reply, see
the answer to it; a screenshot is saved under test-artifacts/ (gitignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.channels.conftest import ServiceT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


async def test_book_in_a_browser(service: ServiceT) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright, expect

    base, _rt, stand_in = service
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 520, "height": 760})
            await page.goto(base + "/")
            await page.fill("#cheshire-input", "Hi! Can I book a groom for my poodle?")
            await page.press("#cheshire-input", "Enter")

            await expect(page.locator(".cheshire-msg-me")).to_have_text(
                ["Hi! Can I book a groom for my poodle?"]
            )
            bot = page.locator(".cheshire-msg-bot")
            await expect(bot.first).to_be_visible(timeout=20_000)
            if stand_in:
                await expect(bot.first).to_have_text("You said: Hi! Can I book a groom for my poodle?")
            options = page.locator(".cheshire-option")
            await expect(options.first).to_be_visible()
            replies_before = await bot.count()
            tapped = (await options.first.text_content()) or ""
            await options.first.click()

            # The tapped option shows as the customer's message, and the assistant answers it.
            await expect(page.locator(".cheshire-msg-me").last).to_have_text(tapped)
            await expect(bot).to_have_count(replies_before + 1, timeout=20_000)
            if stand_in:
                await expect(bot.last).to_have_text("Great! Saturday 10:00 is held for you.")
            await page.screenshot(path=str(ARTIFACTS / "web-chat.png"), full_page=True)
        finally:
            await browser.close()
    assert (ARTIFACTS / "web-chat.png").stat().st_size > 0
