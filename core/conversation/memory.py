"""Conversation memory: the recent turns verbatim, older turns folded into `conversation.summary`.

The verbatim part is kept under a fixed token budget. When it grows past the budget, the oldest
messages are folded into the summary until it is back under half the budget — in chunks, not one
message per turn, so the prompt prefix stays byte-identical (and cached) for many turns in between.
The summary is deterministic (one short line per folded message) and itself capped, oldest lines first
out: the facts that matter (pets, appointments) are re-read from the database every turn anyway.

That extractive summary is only the immediate value. Each fold also queues a `summarize_conversation`
job (core/conversation/summarize.py) that asks the model to merge the previous summary with the folded
messages; it replaces the extractive text later, outside the customer's turn, and leaves it in place
when no model is configured or the model fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Conversation, Job, Message
from core.jobs.payloads import JobPayload, job_payload
from core.jobs.queue import enqueue
from core.llm.types import ChatMessage
from core.types import Author, Direction

HISTORY_TOKEN_BUDGET = 3000
SUMMARY_MAX_CHARS = 2400
LINE_MAX_CHARS = 160
MAX_ROWS = 200
SUMMARIZE_JOB = "summarize_conversation"
# Each folded message as the summarizing model reads it (longer than a summary line, still bounded).
TRANSCRIPT_LINE_MAX_CHARS = 1000
TRANSCRIPT_MAX_CHARS = 24000  # what one summary job sends at most, newest kept


@job_payload(SUMMARIZE_JOB)
class SummarizePayload(JobPayload):
    """What one summary job merges (core/conversation/summarize.py): see `queue_summary`."""

    conversation_id: int
    until: int  # the conversation's summary mark when this was queued; the job applies only at it
    previous: str = ""
    lines: list[str]


class ChatRow(Protocol):
    """What memory needs of a message: a `Message` row or a `Line`."""

    @property
    def direction(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def payload(self) -> str | None: ...
    @property
    def attachments(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Line:
    """The columns of a message the prompt uses (no ORM object, no delivery columns)."""

    id: int
    direction: str
    author: str
    text: str
    payload: str | None
    attachments: list[Any]

    @classmethod
    def of(cls, row: Message) -> Line:
        return cls(row.id, row.direction, row.author, row.text, row.payload, list(row.attachments or []))


_LINE_COLUMNS = (
    Message.id,
    Message.direction,
    Message.author,
    Message.text,
    Message.payload,
    Message.attachments,
)


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def message_text(row: ChatRow) -> str:
    text = row.text or ""
    if not text and row.payload:
        text = f"[tapped a button: {row.payload}]"
    if row.attachments:
        kinds = ", ".join(sorted({str(a.get("kind", "file")) for a in row.attachments}))
        text = f"{text} [sent: {kinds}]".strip()
    if row.author == Author.KIMMIE.value:
        text = f"(the groomer wrote:) {text}"
    return text or "(empty)"


def to_chat(rows: Sequence[ChatRow]) -> list[ChatMessage]:
    """Rows to alternating user/assistant turns, starting with a user turn (as the APIs require)."""
    turns: list[tuple[str, list[str]]] = []
    for row in rows:
        role = "user" if row.direction == Direction.INBOUND.value else "assistant"
        if turns and turns[-1][0] == role:
            turns[-1][1].append(message_text(row))
        else:
            turns.append((role, [message_text(row)]))
    if turns and turns[0][0] == "assistant":
        turns.insert(0, ("user", ["(conversation continues)"]))
    return [ChatMessage("user" if role == "user" else "assistant", "\n".join(parts)) for role, parts in turns]


async def load_history(
    session: AsyncSession,
    conversation: Conversation,
    *,
    up_to_message_id: int,
    budget: int = HISTORY_TOKEN_BUDGET,
    summarize: bool = True,
) -> list[Line]:
    """The verbatim rows for this turn, folding older ones into the summary when over budget (and,
    with `summarize`, queueing the model-written summary of what was folded).

    Later inbound messages (queued behind this one) are left out; replies written after this message
    arrived (answers to the ones before it) are kept, and the current message goes last: it is the one
    the model answers now.
    """
    query = (
        select(*_LINE_COLUMNS)
        .where(
            Message.conversation_id == conversation.id,
            or_(Message.id <= up_to_message_id, Message.direction == Direction.OUTBOUND.value),
        )
        .order_by(Message.id.desc())
        .limit(MAX_ROWS)
    )
    if conversation.summary_until_message_id is not None:
        query = query.where(Message.id > conversation.summary_until_message_id)
    rows = [Line(*row) for row in reversed((await session.execute(query)).all())]
    current = [r for r in rows if r.id == up_to_message_id]
    if not current:  # folded away by an earlier turn that ran ahead of it: it must still be answered
        row = await session.get(Message, up_to_message_id)
        current = [Line.of(row)] if row is not None else []
    rows = [r for r in rows if r.id != up_to_message_id] + current
    sizes = [estimate_tokens(message_text(r)) for r in rows]
    total = sum(sizes)
    if total <= budget:
        return rows
    fold = 0
    while fold < len(rows) - 1 and total > budget // 2:
        total -= sizes[fold]
        fold += 1
    previous = conversation.summary
    fold_into_summary(conversation, rows[:fold])
    if summarize:
        await queue_summary(session, conversation, previous=previous, rows=rows[:fold])
    return rows[fold:]


async def queue_summary(
    session: AsyncSession, conversation: Conversation, *, previous: str | None, rows: Sequence[Line]
) -> None:
    """Queue the model's merge of `previous` and the folded rows, in the turn's own transaction.

    The payload carries what was folded (the job re-reads nothing but the conversation's mark), and
    the job applies only while `summary_until_message_id` is still `until`. One queue key per
    conversation: its summaries run one at a time, in fold order, and never hold up a customer turn
    (process_message has its own key). The idempotency key makes a re-run turn queue nothing new.

    A summary job not finished yet (workers behind, the model slow) will find the mark moved and
    skip: this job takes over its input (its previous summary and lines, then ours), so what it
    would have merged is not lost to the extractive summary's cap.
    """
    until = conversation.summary_until_message_id
    queue_key = f"summarize:{conversation.id}"
    lines = [transcript_line(row) for row in rows]
    pending = await session.scalar(
        select(Job.payload)
        .where(Job.queue_key == queue_key, Job.status.in_(("queued", "running")))
        .order_by(Job.id.desc())
        .limit(1)
    )
    if pending:
        previous = str(pending.get("previous") or "")
        lines = [str(line) for line in pending.get("lines") or []] + lines
    while sum(len(line) for line in lines) > TRANSCRIPT_MAX_CHARS and len(lines) > 1:
        lines.pop(0)
    await enqueue(
        session,
        SUMMARIZE_JOB,
        SummarizePayload(
            conversation_id=conversation.id, until=until, previous=previous or "", lines=lines
        ).dump(),
        idempotency_key=f"summarize:{conversation.id}:{until}",
        queue_key=queue_key,
    )


def _who(row: ChatRow) -> str:
    return {"customer": "Customer", "kimmie": "Groomer"}.get(row.author, "Assistant")


def transcript_line(row: ChatRow) -> str:
    text = " ".join(message_text(row).split())
    if len(text) > TRANSCRIPT_LINE_MAX_CHARS:
        text = text[: TRANSCRIPT_LINE_MAX_CHARS - 1] + "…"
    return f"{_who(row)}: {text}"


def fold_into_summary(conversation: Conversation, rows: Sequence[Line]) -> None:
    if not rows:
        return
    lines = [line for line in (conversation.summary or "").splitlines() if line]
    for row in rows:
        text = " ".join(message_text(row).split())
        if len(text) > LINE_MAX_CHARS:
            text = text[: LINE_MAX_CHARS - 1] + "…"
        lines.append(f"- {_who(row)}: {text}")
    while lines and sum(len(line) + 1 for line in lines) > SUMMARY_MAX_CHARS:
        lines.pop(0)
    conversation.summary = "\n".join(lines)
    conversation.summary_until_message_id = rows[-1].id
