"""`make demo` (issue 14, section 7): from a fresh clone, one command with no keys serves the customer's
website chat and Kimmie's page; in Chromium a newcomer books as the customer and approves as Kimmie
through the fake Bot API (skipped without Debian's chromium, like tests/channels/test_browser.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.channels.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _require_chromium
from tests.test_startup import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Demo:
    customer: str
    kimmie: str
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    clone = tmp_path_factory.mktemp("fresh") / "cheshire"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    # The machine's virtualenv stands in for `make install` (no test reaches the internet): its stamp
    # must look newer than the clone's requirement files, as after an install.
    (clone / ".venv").symlink_to((ROOT / ".venv").resolve())
    for name in ("requirements.lock", "pyproject.toml"):
        os.utime(clone / name, (1_000_000_000, 1_000_000_000))
    port, kimmie_port = free_port(), free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(clone), "DEMO_PORT": str(port)}
    env["DEMO_KIMMIE_PORT"] = str(kimmie_port)
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "demo"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make and python in one group: stopped together
    )
    try:
        yield Demo(f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{kimmie_port}/kimmie", proc)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def _up(demo: Demo, url: str) -> str:
    deadline = time.monotonic() + 180  # a cold start on a shared machine
    async with aiohttp.ClientSession() as http:
        while True:
            assert demo.proc.poll() is None, (
                f"make demo exited: {demo.proc.stdout.read() if demo.proc.stdout else ''}"
            )
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return await response.text()
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, f"{url} did not come up"
            await asyncio.sleep(0.3)


async def test_make_demo_from_a_fresh_clone_serves_both_pages(demo: Demo) -> None:
    customer = await _up(demo, demo.customer)
    assert "/static/chat/widget.js" in customer  # the website chat widget
    kimmie = await _up(demo, demo.kimmie)
    assert "Kimmie's Telegram" in kimmie
    async with aiohttp.ClientSession() as http, http.get(demo.kimmie + "/api/messages") as response:
        state = await response.json()
    assert state["customer_url"] == demo.customer


@pytest.mark.browser
async def test_a_newcomer_books_as_the_customer_and_approves_as_kimmie(demo: Demo) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright, expect

    await _up(demo, demo.customer)
    await _up(demo, demo.kimmie)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 520, "height": 760})
            await page.goto(demo.customer)
            await page.fill("#cheshire-input", "Hi! I'd like to book a groom")
            await page.press("#cheshire-input", "Enter")
            bot = page.locator(".cheshire-msg-bot")
            for _ in range(16):  # tap the first offered choice (or type the name asked) until filed
                await expect(bot.last).to_be_visible(timeout=30_000)
                if await bot.filter(has_text="Request sent").count():
                    break
                count = await bot.count()
                asked = await bot.last.inner_text()
                if "name" in asked.lower():
                    await page.fill("#cheshire-input", _typed_answer(asked))
                    await page.press("#cheshire-input", "Enter")
                else:
                    await expect(page.locator(".cheshire-option").first).to_be_visible(timeout=30_000)
                    await page.locator(".cheshire-option").first.click()
                await expect(bot).not_to_have_count(count, timeout=30_000)
            await expect(bot.filter(has_text="Request sent")).to_have_count(1)
            await page.screenshot(path=str(ARTIFACTS / "demo-customer.png"), full_page=True)

            kimmie = await browser.new_page(viewport={"width": 520, "height": 900})
            await kimmie.goto(demo.kimmie)
            card = kimmie.locator(".msg", has_text="Booking request #1")
            await expect(card).to_be_visible(timeout=30_000)
            await card.get_by_role("button", name="✅ Approve").click()
            await expect(card).to_contain_text("confirmed", timeout=30_000)
            await expect(card.get_by_role("button", name="✅ Approve")).to_have_count(0)
            await kimmie.screenshot(path=str(ARTIFACTS / "demo-kimmie.png"), full_page=True)

            # The customer hears it in the website chat.
            await expect(bot.filter(has_text="You're booked!")).to_have_count(1, timeout=30_000)
        finally:
            await browser.close()


def _typed_answer(asked: str) -> str:
    """What the customer types when asked: the dog's name, else their own."""
    return "Biscuit" if "dog" in asked.lower() else "Zoe Hart"


async def test_kimmies_buttons_reach_the_real_handlers(demo: Demo) -> None:
    """Without a browser: the customer books through the chat API, Kimmie's page shows the card, and
    pressing Approve there goes through the fake Bot API to the bot, which edits the card."""
    await _up(demo, demo.customer)
    await _up(demo, demo.kimmie)
    async with aiohttp.ClientSession() as http:
        body: dict[str, str] = {"session_id": "demo-walkthrough-0001", "message": "Hi, I want to book"}
        for _ in range(16):
            async with http.post(demo.customer + "api/chat", json=body) as response:
                replies = (await response.json())["replies"]
            if any("Request sent" in r["text"] for r in replies):
                break
            options = [o for r in replies for o in r["options"]]
            if options:
                body = {**body, "message": options[0]["title"], "payload": options[0]["payload"]}
            else:  # a question typed, not tapped: the dog's name, then the customer's
                asked = " ".join(r["text"] for r in replies)
                body = {"session_id": body["session_id"], "message": _typed_answer(asked)}
        assert any("Request sent" in r["text"] for r in replies)

        def undecided(message: dict[str, Any]) -> bool:
            return any("Approve" in b["text"] for row in message["buttons"] for b in row)

        async def card(message_id: object = None) -> dict[str, Any]:
            """This request's card: the newest one still undecided (the browser walk-through may have
            approved an earlier one on the same demo), then, by its id, the same message edited."""
            deadline = time.monotonic() + 60
            while True:
                async with http.get(demo.kimmie + "/api/messages") as response:
                    shown = (await response.json())["messages"]
                found = [
                    m
                    for m in shown
                    if "Booking request #" in m["text"]
                    and (m["id"] == message_id if message_id is not None else undecided(m))
                ]
                if found:
                    return found[-1]  # type: ignore[no-any-return]
                assert time.monotonic() < deadline, shown
                await asyncio.sleep(0.3)

        request = await card()
        approve = next(b for row in request["buttons"] for b in row if "Approve" in b["text"])
        async with http.post(demo.kimmie + "/api/press", json={"id": request["id"], "data": approve["data"]}):
            pass
        deadline = time.monotonic() + 60
        while "Status: ✅ confirmed" not in str((decided := await card(request["id"]))["text"]):
            assert time.monotonic() < deadline, decided
            await asyncio.sleep(0.3)
        assert not undecided(decided)
