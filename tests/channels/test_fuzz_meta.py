"""Property-based fuzzing of the Meta webhooks: the parser on its own (arbitrary JSON values, and the
real fixtures with random mutations), then signed POSTs of fuzzed bodies through the real app on the
test database. Bad input never raises, never answers 500, and never costs a valid event its place."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from channels.meta.parser import (
    KEPT_ATTACHMENT_KINDS,
    MAX_ID_CHARS,
    MAX_PAYLOAD_CHARS,
    MAX_SENDER_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    parse_webhook,
)
from core.db.database import Database
from core.db.models import Message
from core.types import Channel, InboundMessage
from tests.channels.conftest import FIXTURES, build_app, make_settings, post_signed

BODY_LIMIT = 64 * 1024  # small, so some fuzzed bodies cross it (413) without megabytes per example
MESSENGER = "/webhook/facebook"
INSTAGRAM = "/webhook/instagram"
FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
FIXTURE_PAYLOADS = {
    name: json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8")) for name in FIXTURE_NAMES
}

# The function-scoped fixtures (database, app) are shared by a test's examples on purpose: each example
# uses its own ids, so no example depends on a clean table.
PURE = hsettings(max_examples=300, deadline=None)
HTTP = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- strategies -------------------------------------------------------------------------------------

# Characters that break storage rather than parsing: NUL (PostgreSQL text refuses it), lone surrogates
# (valid in JSON's \uXXXX escapes, not encodable as UTF-8), right-to-left marks, emoji, combining marks.
ODD_CHARS = ["\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "🐶", "e\u0301", "\n", "\u2028", "'", '"', "\\"]
odd_text = st.lists(st.sampled_from(ODD_CHARS) | st.text(max_size=3), min_size=1, max_size=12).map("".join)
huge_text = st.builds(
    lambda char, n: char * n, st.sampled_from(["x", "é", "🐶", "\x00"]), st.integers(256, 40_000)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-1, 0, 2**63, -(2**63), 10**20, 10**30])
    | st.floats()
    | st.text(max_size=20)
    | odd_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
timestamps = (
    st.integers()
    | st.sampled_from([-1, 0, 1, 10**13, 10**15, 10**20, 2**63, -(2**63), 253402300800000])
    | st.text(max_size=15)
    | st.floats()
    | st.booleans()
)
# What a field is replaced by: another JSON type, a huge or odd string, a strange timestamp.
replacements = json_values | huge_text | odd_text | timestamps


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (dict keys and list indexes)."""
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*prefix, index))
    return paths


def _mutate(doc: Any, path: tuple[Any, ...], action: str, replacement: Any) -> None:
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if action == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement


def _mutated(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with 1-4 random mutations: a field replaced by another JSON type, a huge or odd string or
    a strange timestamp, or removed."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        _mutate(doc, path, draw(st.sampled_from(["replace", "remove"])), draw(replacements))
    return doc


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> Any:
    return _mutated(draw, FIXTURE_PAYLOADS[draw(st.sampled_from(FIXTURE_NAMES))])


FIXTURE_EVENTS = [
    event
    for payload in FIXTURE_PAYLOADS.values()
    for entry in payload["entry"]
    for event in entry["messaging"]
]


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    return _mutated(draw, draw(st.sampled_from(FIXTURE_EVENTS)))


def _event(sender: Any, mid: Any, text: Any, timestamp: Any = 1732572000000) -> dict[str, Any]:
    return {
        "sender": {"id": sender},
        "recipient": {"id": "1"},
        "timestamp": timestamp,
        "message": {"mid": mid, "text": text},
    }


# Events that parse but would not fit the tables: the ones that used to fail a whole batch's INSERT.
nasty_events = st.one_of(
    st.builds(lambda n: _event("7" * n, "m-nasty", "hi"), st.integers(201, 1000)),
    st.builds(lambda n: _event("42", "m" * n, "hi"), st.integers(256, 1000)),
    st.builds(lambda t: _event("42", "m-nasty", t), odd_text | huge_text),
    st.builds(lambda c: _event("42", f"m-{c}", "hi"), st.sampled_from(["\x00", "\ud800"])),
    st.builds(lambda s: _event(s, "m-nasty", "hi"), st.sampled_from(["4\x002", "4\udc00"])),
    st.builds(lambda ts: _event("42", "m-nasty", "hi", ts), timestamps),
    st.builds(
        lambda p: {
            "sender": {"id": "42"},
            "timestamp": 1,
            "postback": {"mid": "p-nasty", "title": "T", "payload": p},
        },
        huge_text | odd_text,
    ),
    st.builds(
        lambda p: {
            "sender": {"id": "42"},
            "timestamp": 1,
            "message": {"mid": "q-nasty", "text": "Yes", "quick_reply": {"payload": p}},
        },
        huge_text | odd_text,
    ),
    st.builds(
        lambda url, r: {
            "sender": {"id": "42"},
            "timestamp": 1,
            "message": {
                "mid": "a-nasty",
                "reply_to": {"mid": r},
                "attachments": [{"type": "image", "payload": {"url": url}}],
            },
        },
        huge_text | odd_text,
        huge_text | odd_text,
    ),
)
events = json_values | nasty_events | mutated_events()


@st.composite
def meta_shaped(draw: st.DrawFn) -> Any:
    """A payload with Meta's outer shape whose entries and events are anything at all."""
    entry = draw(st.dictionaries(st.sampled_from(["id", "time", "changes", "standby"]), json_values))
    entry["messaging"] = draw(st.lists(events, max_size=5) | json_values)
    entries = draw(st.lists(st.just(entry), min_size=1, max_size=2) | json_values)
    return {"object": draw(st.sampled_from(["page", "instagram"])), "entry": entries}


any_payload = json_values | mutated_fixtures() | meta_shaped()

# --- the parser on its own ----------------------------------------------------------------------------


def _storable(value: str) -> bool:
    """Fits a PostgreSQL text column: encodable as UTF-8 and free of NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def assert_sane(message: InboundMessage, channel: Channel | None) -> None:
    assert message.channel == channel
    for value, limit in (
        (message.external_user_id, MAX_SENDER_ID_CHARS),
        (message.platform_message_id, MAX_ID_CHARS),
    ):
        assert isinstance(value, str) and 0 < len(value) <= limit and _storable(value)
    assert isinstance(message.text, str) and len(message.text) <= MAX_TEXT_CHARS and _storable(message.text)
    if message.payload is not None:
        assert 0 < len(message.payload) <= MAX_PAYLOAD_CHARS and _storable(message.payload)
    if message.reply_to is not None:
        assert 0 < len(message.reply_to) <= MAX_ID_CHARS and _storable(message.reply_to)
    for attachment in message.attachments:
        assert attachment.kind in KEPT_ATTACHMENT_KINDS
        if attachment.url is not None:
            assert len(attachment.url) <= MAX_URL_CHARS and _storable(attachment.url)
    if message.sent_at is not None:
        assert message.sent_at.tzinfo is not None
        assert datetime(1970, 1, 1, tzinfo=UTC) < message.sent_at < datetime(2100, 1, 1, tzinfo=UTC)
    assert message.text or message.payload or message.attachments


@PURE
@given(any_payload)
def test_parser_never_raises_and_returns_storable_messages(payload: Any) -> None:
    result = parse_webhook(payload)
    for message in result.messages:
        assert_sane(message, result.channel)


@pytest.mark.parametrize(
    "timestamp",
    [10**20, 2**63, 10**15, 253402300800000, -(10**20)],
    ids=["1e20", "2^63", "year-33658", "year-10000", "-1e20"],
)
def test_an_impossible_timestamp_keeps_the_message_without_a_time(timestamp: int) -> None:
    """Regression: datetime.fromtimestamp raised OverflowError/ValueError/OSError here (a 500)."""
    result = parse_webhook(
        {"object": "page", "entry": [{"messaging": [_event("42", "m-1", "hi", timestamp)]}]}
    )
    assert [(m.platform_message_id, m.text, m.sent_at) for m in result.messages] == [("m-1", "hi", None)]


def test_values_that_do_not_fit_the_tables_are_dropped_or_clipped() -> None:
    """Regression: on PostgreSQL an over-long or NUL-bearing value failed the whole batch's INSERT."""
    long_mid = "m" * 300
    payload = {
        "object": "instagram",
        "entry": [
            {
                "messaging": [
                    _event("7" * 201, "m-long-sender", "dropped: no such PSID"),
                    _event("42", long_mid, "kept under a derived id"),
                    _event("42", "m-nul", "a\x00b\ud800c" + "x" * (MAX_TEXT_CHARS + 10)),
                    {
                        "sender": {"id": "42"},
                        "timestamp": 5,
                        "postback": {"mid": "p-long", "title": "T", "payload": "P" * 1001},
                    },
                    {
                        "sender": {"id": "42"},
                        "timestamp": 6,
                        "message": {
                            "mid": "q-long",
                            "text": "Yes",
                            "quick_reply": {"payload": "Q" * 1001},
                            "reply_to": {"mid": "r" * 300},
                        },
                    },
                ]
            }
        ],
    }
    result = parse_webhook(payload)
    for message in result.messages:
        assert_sane(message, Channel.INSTAGRAM)
    by_text = {m.text[:12]: m for m in result.messages}
    assert not any(text.startswith("dropped") for text in by_text)
    derived = by_text["kept under a"].platform_message_id
    again = {m.text[:12]: m for m in parse_webhook(payload).messages}
    assert derived != long_mid and derived == again["kept under a"].platform_message_id  # still dedupes
    assert by_text["ab\ufffdc" + "x" * 8].text.startswith("ab\ufffdc")
    assert by_text["Yes"].payload is None and by_text["Yes"].reply_to is None
    assert result.skipped["malformed_event"] == 2  # the long PSID and the postback it cannot route


@PURE
@given(st.lists(events, max_size=6), st.sampled_from(["page", "instagram"]))
def test_a_valid_event_survives_any_neighbours(neighbours: list[Any], obj: str) -> None:
    valid = _event("5550001", "m-the-valid-one", "book me in", 1732572000000)
    result = parse_webhook({"object": obj, "entry": [{"messaging": [*neighbours, valid]}]})
    assert "m-the-valid-one" in [m.platform_message_id for m in result.messages]


# --- end to end: signed POSTs through the real app ---------------------------------------------------


@pytest.fixture
async def meta_client(aiohttp_client: Any, db: Database, database_url: str) -> Any:
    settings = make_settings(database_url, max_body_bytes=BODY_LIMIT)
    return await aiohttp_client(build_app(db, settings))


def _body(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=True, allow_nan=True).encode()


raw_bodies = st.one_of(
    any_payload.map(_body),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b"\xff\xfe{}",
            b'{"object": "page", "entry": [' * 3,
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
            b"1" * 5000,
            b'"\\ud800"',
            b"NaN",
        ]
    ),
)


@HTTP
@given(body=raw_bodies, path=st.sampled_from([MESSENGER, INSTAGRAM]))
@example(body=b"[" * 5000 + b"]" * 5000, path=MESSENGER)  # regression: RecursionError in json.loads
@example(
    body=_body({"object": "page", "entry": [{"messaging": [_event("42", "m" * 300, "hi")]}]}), path=MESSENGER
)  # regression: a mid over String(255) failed the INSERT on PostgreSQL
@example(
    body=_body({"object": "instagram", "entry": [{"messaging": [_event("42", "m-nul", "a\x00b")]}]}),
    path=INSTAGRAM,
)  # regression: NUL in text is refused by PostgreSQL
async def test_fuzzed_signed_posts_answer_200_400_or_413(meta_client: Any, body: bytes, path: str) -> None:
    response = await post_signed(meta_client, path, body)
    assert response.status in (200, 400, 413), (response.status, await response.text())


@HTTP
@given(
    neighbours=st.lists(events, min_size=1, max_size=5),
    position=st.integers(0, 5),
    path=st.sampled_from([MESSENGER, INSTAGRAM]),
    text=st.text(min_size=1, max_size=50) | odd_text,
)
async def test_a_valid_event_in_a_malformed_batch_is_stored(
    meta_client: Any, db: Database, neighbours: list[Any], position: int, path: str, text: str
) -> None:
    mid = f"m-valid-{uuid.uuid4().hex}"
    valid = _event("5550001", mid, "book me " + text, 1732572000000)
    obj = "page" if path == MESSENGER else "instagram"
    neighbours = sorted(neighbours, key=lambda event: len(_body(event)))
    while True:  # the largest neighbours go until the batch fits the body limit (that case is a 413)
        batch = [*neighbours[:position], valid, *neighbours[position:]]
        body = _body({"object": obj, "entry": [{"messaging": batch}]})
        if len(body) <= BODY_LIMIT:
            break
        neighbours.pop()
    response = await post_signed(meta_client, path, body)
    assert response.status == 200, await response.text()
    async with db.transaction() as session:
        stored = await session.scalar(select(Message.text).where(Message.platform_message_id == mid))
    assert stored is not None and stored.startswith("book me ")
