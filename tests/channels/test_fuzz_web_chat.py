"""Property-based fuzzing of the website chat: POST /api/chat with fuzzed bodies and content types,
GET /api/chat/{session_id}/messages with fuzzed session ids and `after`. A request we broke is a 400
naming the field we broke (or 413/415); one we did not break is accepted; nothing is ever a 500."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from core.db.database import Database
from core.db.models import Message
from tests.channels.conftest import build_app, make_settings

BODY_LIMIT = 16 * 1024
HTTP = hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = ("session_id", "message", "name", "payload", "client_message_id")

ODD_CHARS = ["\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "🐶", "e\u0301", "\n", "\u2028", "'", '"', "\\"]
odd_text = st.lists(st.sampled_from(ODD_CHARS) | st.text(max_size=3), min_size=1, max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | odd_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _storable(text: str) -> bool:
    """No NUL (PostgreSQL refuses it) and no lone surrogate (not UTF-8): both are a 400."""
    return "\x00" not in text and not any("\ud800" <= char <= "\udfff" for char in text)


# Values each field accepts: what the widget sends (a message may hold any storable text).
VALID: dict[str, st.SearchStrategy[Any]] = {
    "session_id": st.from_regex(r"[A-Za-z0-9_-]{8,128}", fullmatch=True),
    "message": (st.text(min_size=1, max_size=300) | odd_text).filter(lambda t: t.strip() and _storable(t)),
    "name": st.none() | st.text(max_size=100).filter(_storable),
    "payload": st.none() | st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True),
    "client_message_id": st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
}
# Values a field refuses: wrong types, out of pattern, too long, blank.
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "session_id": st.sampled_from(
        ["", "short", "x" * 129, "has space 123", "../../etc/passwd", "ab\x00cdefgh"]
    )
    | st.integers()
    | st.lists(st.integers(), max_size=2),
    "message": st.sampled_from(["", "   ", "\n\t", "x" * 2001, "\x00", "a\x00b", "hi \ud83d"])
    | st.integers()
    | st.booleans(),
    "name": st.sampled_from(["n" * 101, "Ann\x00", "\ud800"])
    | st.integers()
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    "payload": st.sampled_from(["", "has space", "é", "P" * 65, "\x00"]) | st.integers(),
    "client_message_id": st.sampled_from(["", "x" * 65, "a b", "\ud800"]) | st.floats(),
}


@st.composite
def chat_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A chat body where each field is valid, broken or missing (required ones missing count as
    broken), plus extra fields; and the set of fields broken."""
    body: dict[str, Any] = {}
    broken: set[str] = set()
    for name in FIELDS:
        choice = draw(st.sampled_from(["valid", "valid", "invalid", "missing"]))
        if choice == "missing":
            if name in ("session_id", "message"):
                broken.add(name)
            continue
        if choice == "invalid":
            broken.add(name)
        body[name] = draw(INVALID[name] if choice == "invalid" else VALID[name])
    extras = draw(
        st.dictionaries(st.text(max_size=10).filter(lambda key: key not in FIELDS), json_values, max_size=3)
    )
    return {**extras, **body}, broken


@pytest.fixture
async def chat_client(aiohttp_client: Any, db: Database, database_url: str) -> Any:
    return await aiohttp_client(build_app(db, make_settings(database_url, max_body_bytes=BODY_LIMIT)))


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


@HTTP
@given(case=chat_bodies())
# Regressions: NUL in the message or the name failed the INSERT on PostgreSQL (a 500).
@example(case=({"session_id": "s" * 32, "message": "a\x00b"}, {"message"}))
@example(case=({"session_id": "s" * 32, "message": "hi", "name": "Ann\x00"}, {"name"}))
@example(case=({"session_id": "t" * 32, "message": "hi \ud83d"}, {"message"}))
async def test_fuzzed_chat_posts_are_accepted_or_400_naming_a_broken_field(
    chat_client: Any, db: Database, case: tuple[dict[str, Any], set[str]]
) -> None:
    body, broken = case
    response = await chat_client.post(
        "/api/chat", data=_json(body), headers={"Content-Type": "application/json"}
    )
    answer = await response.json()
    if broken:
        assert response.status == 400, answer
        assert answer["field"] in broken and answer["error"].startswith(f"{answer['field']}:")
        return
    assert response.status in (200, 202), answer
    async with db.transaction() as session:
        stored = await session.scalar(select(Message.text).where(Message.id == answer["last_id"]))
    assert stored is not None and stored  # the message is kept, cleaned for storage


@HTTP
@given(
    body=st.one_of(
        json_values.filter(lambda value: not isinstance(value, dict)).map(_json),
        st.binary(max_size=100),
        st.sampled_from([b"", b"{", b"[" * 5000 + b"]" * 5000, b'"\\ud800"', b"NaN", b"\xff\xfe{}"]),
        st.builds(lambda n: _json({"session_id": "s" * 32, "message": "x" * n}), st.integers(2001, 40_000)),
    ),
    content_type=st.sampled_from(
        ["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded", ""]
    ),
)
async def test_fuzzed_chat_bodies_and_types_answer_400_413_or_415(
    chat_client: Any, body: bytes, content_type: str
) -> None:
    response = await chat_client.post("/api/chat", data=body, headers={"Content-Type": content_type})
    # The declared size is checked first, before the content type or a byte is read.
    expected = 413 if len(body) > BODY_LIMIT else 415 if content_type != "application/json" else 400
    assert response.status == expected, await response.text()
    assert "error" in await response.json()


LIVE_SESSION = "a1b2c3d4e5f60718"  # has a conversation, so `after` reaches the SQL query
session_ids = st.one_of(
    st.just(LIVE_SESSION),
    st.from_regex(r"[A-Za-z0-9_-]{8,128}", fullmatch=True),
    st.text(min_size=1, max_size=200),
    odd_text,
    st.sampled_from(["a" * 7, "a" * 129, "..", ".", "%00", "abc/def/ghi"]),
)
afters = st.one_of(
    st.none(),
    st.integers().map(str),
    st.sampled_from(
        [str(2**63), str(2**63 - 1), str(-(2**63)), "9" * 5000, "1e3", "0x10", " 5", "1_0", "١٢"]
    ),
    st.text(max_size=30),
)


@HTTP
@given(session_id=session_ids, after=afters)
@example(session_id=LIVE_SESSION, after=str(2**63))  # regression: over BIGINT → 500 on both databases
@example(session_id=LIVE_SESSION, after="9" * 5000)
async def test_fuzzed_polls_answer_200_400_or_404(
    chat_client: Any, session_id: str, after: str | None
) -> None:
    # The same client message id each time: the first example stores it, the others are retries.
    live = {"session_id": LIVE_SESSION, "message": "hello", "client_message_id": "first"}
    assert (await chat_client.post("/api/chat", json=live)).status in (200, 202)
    query = "" if after is None else "?after=" + quote(after.encode("utf-8", "surrogatepass"), safe="")
    path = f"/api/chat/{quote(session_id.encode('utf-8', 'surrogatepass'), safe='')}/messages{query}"
    response = await chat_client.get(path)
    assert response.status in (200, 400, 404), await response.text()
    if response.status == 200:
        assert (await response.json())["status"] in ("idle", "processing")


@pytest.mark.parametrize(("after", "status"), [(str(2**63 - 1), 200), (str(2**63), 400), (str(10**40), 400)])
async def test_an_after_beyond_bigint_is_a_400_not_a_500(chat_client: Any, after: str, status: int) -> None:
    """Regression: an `after` over BIGINT reached the query (OverflowError on SQLite, DataError on
    PostgreSQL) and answered 500."""
    posted = await chat_client.post("/api/chat", json={"session_id": LIVE_SESSION, "message": "hello"})
    assert posted.status in (200, 202)
    response = await chat_client.get(f"/api/chat/{LIVE_SESSION}/messages?after={after}")
    assert response.status == status
    answer = await response.json()
    assert answer["replies"] == [] if status == 200 else answer["field"] == "after"
