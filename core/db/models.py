"""SQLAlchemy 2 typed mappings. Table names follow the old system's models where it had them.

Every timestamp is an aware UTC datetime (`UtcDateTime`), so SQLite and PostgreSQL behave alike.
Constraint names come from `NAMING_CONVENTION`, so migrations can address them on both databases.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware UTC datetimes (SQLite would drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL, JSON text on SQLite.
JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JsonType,
        list[Any]: JsonType,
    }


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Client(TimestampMixin, Base):
    __tablename__ = "client"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40), index=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    notes: Mapped[str | None] = mapped_column(Text)
    crm_id: Mapped[str | None] = mapped_column(String(100))
    # The Twenty CRM Person this client is (core/integrations/twenty.py); set once it is found or made.
    twenty_person_id: Mapped[str | None] = mapped_column(String(64))

    identities: Mapped[list[ChannelIdentity]] = relationship(back_populates="client")
    pets: Mapped[list[Pet]] = relationship(back_populates="client", order_by="Pet.id")
    if TYPE_CHECKING:  # a column_property defined below ChannelIdentity
        reachable_channels: Mapped[str | None]


class ChannelIdentity(TimestampMixin, Base):
    """One channel account (PSID, IGSID, Telegram chat, web session) of one client."""

    __tablename__ = "channel_identity"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str | None] = mapped_column(String(200))
    # The person's username there (Instagram username, Telegram @username), for Kimmie's cards.
    handle: Mapped[str | None] = mapped_column(String(200))
    last_inbound_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set when the platform says the person can no longer be reached (blocked the bot, 551).
    unreachable_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    client: Mapped[Client] = relationship(back_populates="identities")


# The channels a client can be reached on ("instagram,email"), read with the client in the same SELECT
# (a correlated subquery): the engine loads the client every turn, and the prompt asks for another
# contact only when nothing but a windowed channel (Meta's 24 h) reaches the customer.
Client.reachable_channels = column_property(  # type: ignore[assignment]
    select(func.aggregate_strings(ChannelIdentity.channel, ","))
    .where(ChannelIdentity.client_id == Client.id, ChannelIdentity.unreachable_at.is_(None))
    .correlate_except(ChannelIdentity)
    .scalar_subquery()
)


class Pet(TimestampMixin, Base):
    __tablename__ = "pet"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    species: Mapped[str] = mapped_column(String(20), default="dog", server_default="dog")
    breed: Mapped[str | None] = mapped_column(String(100))
    size_class: Mapped[str | None] = mapped_column(String(10))
    coat_type: Mapped[str | None] = mapped_column(String(10))
    weight_kg: Mapped[float | None] = mapped_column(Float)
    temperament: Mapped[str | None] = mapped_column(Text)
    health_notes: Mapped[str | None] = mapped_column(Text)
    vaccination_expires_on: Mapped[date | None] = mapped_column(Date)
    # [{"url": ..., "key": ..., "kind": "photo|before|after|style_reference", "appointment_id": ...}]
    photos: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    last_groomed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Saved by the button flow before the customer gave its name ("Dog N"): the assistant's save_pet
    # fills this record in rather than creating a second pet (core/conversation/tools.py).
    placeholder: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    client: Mapped[Client] = relationship(back_populates="pets")


class Service(TimestampMixin, Base):
    """A bookable service or add-on. Adjustments are maps keyed by size class / coat type."""

    __tablename__ = "service"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    base_price_cents: Mapped[int] = mapped_column(Integer)
    base_duration_min: Mapped[int] = mapped_column(Integer)
    # {"large": {"price_cents": 2000, "minutes": 30}, ...}
    size_adjustments: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    coat_adjustments: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    is_addon: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    sort_order: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Appointment(TimestampMixin, Base):
    __tablename__ = "appointment"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="end_after_start"),
        Index("ix_appointment_status_start_at", "status", "start_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(20), default="requested")
    hold_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    calendar_event_id: Mapped[str | None] = mapped_column(String(1024))
    source_channel: Mapped[str | None] = mapped_column(String(20))
    addon_codes: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    price_min_cents: Mapped[int | None] = mapped_column(Integer)
    price_max_cents: Mapped[int | None] = mapped_column(Integer)
    availability_verified: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    notes: Mapped[str | None] = mapped_column(Text)
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Why Kimmie declined (core/booking/texts.py DECLINE_REASONS: fully_booked, not_a_fit, other);
    # with decided_at it bounds the Undo (5 minutes).
    decline_code: Mapped[str | None] = mapped_column(String(20))
    # The starts Kimmie offered with a decline (UTC ISO strings): the customer accepting one of these
    # is confirmed at once, any other time is a new request.
    offered_starts: Mapped[list[Any] | None] = mapped_column(JsonType)
    # Kimmie's Telegram approval card, so it can be edited when the request changes.
    admin_card_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    admin_card_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # The reminder's fate (core/booking/reach.py): no route reached the customer; it was on Kimmie's
    # daily list; the visit was confirmed (by the customer's tap, or Kimmie's "Mark confirmed").
    reminder_undelivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminder_listed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminder_confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    pets: Mapped[list[Pet]] = relationship(secondary="appointment_pet", order_by="Pet.id")
    service: Mapped[Service] = relationship()
    client: Mapped[Client] = relationship()


class AppointmentPet(Base):
    __tablename__ = "appointment_pet"

    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointment.id", ondelete="CASCADE"), primary_key=True
    )
    pet_id: Mapped[int] = mapped_column(ForeignKey("pet.id", ondelete="CASCADE"), primary_key=True)


class GroomingDesign(TimestampMixin, Base):
    """An AI style preview of a customer's own pet."""

    __tablename__ = "grooming_design"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pet_id: Mapped[int] = mapped_column(ForeignKey("pet.id", ondelete="CASCADE"), index=True)
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointment.id", ondelete="SET NULL"))
    style_prompt: Mapped[str] = mapped_column(Text)
    reference_image_url: Mapped[str | None] = mapped_column(Text)
    image_urls: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    provider_request_id: Mapped[str | None] = mapped_column(String(200), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    # Migration 0008 (core/previews/): who asked, where to deliver, what was run and what it cost.
    client_id: Mapped[int | None] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversation.id", ondelete="SET NULL"))
    style_code: Mapped[str | None] = mapped_column(String(50))
    angle: Mapped[str] = mapped_column(String(10), default="front", server_default="front")
    model: Mapped[str | None] = mapped_column(String(200))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    photo_key: Mapped[str | None] = mapped_column(Text)
    storage_keys: Mapped[list[Any]] = mapped_column(JsonType, default=list, server_default="[]")
    # The designs of one request (1 angle, or 3 for a full preview) share it: delivered as one album.
    batch_key: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_grooming_design_client_created", "client_id", "created_at"),)


class Conversation(TimestampMixin, Base):
    """One per channel identity: the assistant's running chat with a customer."""

    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"), index=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("channel_identity.id", ondelete="CASCADE"), unique=True
    )
    channel: Mapped[str] = mapped_column(String(20))
    # Short structured state (offline flow step, chosen service...). Survives restarts.
    state: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    summary: Mapped[str | None] = mapped_column(Text)  # older turns, condensed
    summary_until_message_id: Mapped[int | None] = mapped_column(BigInteger)
    human_takeover: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    takeover_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    last_inbound_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    identity: Mapped[ChannelIdentity] = relationship()


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("channel", "platform_message_id"),
        Index("ix_message_conversation_id_id", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(3))
    author: Mapped[str] = mapped_column(String(20))
    # Inbound: the platform's id (dedupe key). Outbound: the id the platform gave on acceptance.
    platform_message_id: Mapped[str | None] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[str | None] = mapped_column(String(1000))
    attachments: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    quick_replies: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    image_urls: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    delivery_status: Mapped[str] = mapped_column(String(20), default="received")
    delivery_error: Mapped[str | None] = mapped_column(Text)
    # Where an outbound message was actually delivered (may differ after a window-closed fallback).
    delivered_via: Mapped[str | None] = mapped_column(String(20))
    # Outbound delivery progress (core/delivery.py): how many parts of this message the platform
    # accepted, and on which channel identity. No foreign key: a stale id just means "start over".
    parts_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parts_identity_id: Mapped[int | None] = mapped_column(BigId)
    # "reminder" for a booking reminder (core/booking/reach.py watches whether it arrived); None else.
    purpose: Mapped[str | None] = mapped_column(String(20))
    # The utility template a reminder goes out as past a messaging window ({"name", "parameters",
    # "buttons"}), on channels whose sender declares `utility_templates`.
    template: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # When the website widget fetched it: a message on a channel that cannot push arrives only then.
    fetched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    llm_provider: Mapped[str | None] = mapped_column(String(30))
    llm_model: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cache_read_input_tokens: Mapped[int | None] = mapped_column(Integer)
    cache_creation_input_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, server_default=func.now())


class Payment(TimestampMixin, Base):
    """One deposit or card hold for an appointment (core/payments/): its Stripe ids and every status it
    went through (`history`: [{"at", "status", "note"}], appended, never rewritten). One per
    appointment: the Checkout idempotency key is the appointment's id."""

    __tablename__ = "payment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    appointment_id: Mapped[int | None] = mapped_column(
        ForeignKey("appointment.id", ondelete="SET NULL"), index=True, unique=True
    )
    client_id: Mapped[int | None] = mapped_column(ForeignKey("client.id", ondelete="SET NULL"))
    # "charge" (a deposit taken now) or "hold" (a manual-capture PaymentIntent: the card is held).
    kind: Mapped[str] = mapped_column(String(10), default="charge", server_default="charge")
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    checkout_url: Mapped[str | None] = mapped_column(Text)
    # When the Checkout Session stops taking payment (the request's hold, within Stripe's limits).
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    history: Mapped[list[Any]] = mapped_column(JsonType, default=list)


class Job(Base):
    """The durable queue. See core/jobs/queue.py for the claim protocol."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_status_run_at", "status", "run_at"),
        Index("ix_job_queue_key_id", "queue_key", "id"),
        # The claim scans only live, unblocked jobs, in run order: done/dead rows pile up and jobs
        # waiting behind a busy queue key can be 100k in an outage; neither may slow it.
        Index(
            "ix_job_claimable",
            "run_at",
            "id",
            postgresql_where=text("status IN ('queued', 'running') AND NOT blocked"),
            sqlite_where=text("status IN ('queued', 'running') AND NOT blocked"),
        ),
        # A key's live jobs (the blocked-flag triggers, memory's pending summary).
        Index(
            "ix_job_live_queue_key",
            "queue_key",
            "id",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        # A worker's running jobs (lease extension, take-over of a dead worker's jobs).
        Index(
            "ix_job_running_locked_by",
            "locked_by",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued|running|done|dead
    # When a queued job is due; for a running job, when its lease ends (then it is claimable again).
    run_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    last_error: Mapped[str | None] = mapped_column(Text)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Unique when given: enqueueing the same key twice is a no-op.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Jobs sharing a queue key run strictly one at a time, in id order (one customer's messages).
    queue_key: Mapped[str | None] = mapped_column(String(255))
    # A live job waiting behind another live job of its queue key. Kept by database triggers
    # (migration 0005) in the statement that inserts or finishes a job; the claim skips these rows.
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class JobWorker(Base):
    """A worker process's heartbeat: jobs it holds are taken over once `expires_at` has passed."""

    __tablename__ = "job_worker"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # Worker.id: host:pid:random
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Set to a few beats ahead at every beat: past it, the worker counts as dead.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class DomainEvent(Base):
    """Something that happened to the business (a booking confirmed, a client created), stored in the
    transaction that made it happen. Follow-up jobs and integrations (n8n, Twenty, Stripe) start from
    these rows (core/events.py); `data` holds plain JSON facts, never secrets."""

    __tablename__ = "domain_event"
    __table_args__ = (Index("ix_domain_event_subject_occurred_at", "subject", "occurred_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID: the id integrations see
    type: Mapped[str] = mapped_column(String(60), index=True)
    # What the event is about, as "<kind>:<id>" ("appointment:12", "client:3"): per-subject order.
    subject: Mapped[str] = mapped_column(String(80))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class ProcessedEvent(Base):
    """Inbound events seen once (Telegram update_id, Stripe event id...): redeliveries are no-ops."""

    __tablename__ = "processed_event"
    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        Index("ix_processed_event_created_at", "created_at"),  # retention deletes by age
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(30))
    event_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, server_default=func.now())


class IntegrationDelivery(Base):
    """An event an integration accepted (n8n answered 2xx): a job run again never posts it twice."""

    __tablename__ = "integration_delivery"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(30), primary_key=True)
    status_code: Mapped[int] = mapped_column(Integer)
    delivered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TwentyRecord(Base):
    """A Twenty CRM record Cheshire keeps current: ("appointment", 12, "notes") -> its Twenty id."""

    __tablename__ = "twenty_record"

    local_kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    local_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    twenty_object: Mapped[str] = mapped_column(String(60), primary_key=True)
    twenty_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AdminAlert(Base):
    """A fault Kimmie has been told about, so she hears of it once, not once per message."""

    __tablename__ = "admin_alert"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    fault_key: Mapped[str] = mapped_column(String(200), unique=True)
    message: Mapped[str] = mapped_column(Text)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BusinessConfig(Base):
    """Editable business data loaded from the catalog file: hours, closures, policies."""

    __tablename__ = "business_config"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ActionLinkUse(Base):
    """A used one-time link from Kimmie's e-mail (Approve / Decline): its nonce, so it works once."""

    __tablename__ = "action_link_use"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    appointment_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(20))
    used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StoredCredential(Base):
    """Credentials obtained at run time (the Google refresh token from /oauth/callback)."""

    __tablename__ = "stored_credential"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
