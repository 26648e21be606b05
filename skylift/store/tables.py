"""SQLAlchemy tables of the state store.

Times are float seconds since the epoch (what the engine and the controller
use), so no timezone conversion happens between Python and the database.
Schema changes go through an alembic revision in ``migrations/versions``;
a unit test fails when these models and the migrations disagree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ReplicaRow(Base):
    """The last known state of one replica, and how to find its process again."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    handle: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """Something that happened, for ``skylift events`` and the dashboard."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_service_ts", "service", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    service: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(Json)


class ServiceRow(Base):
    """Per-service state that must survive a controller restart."""

    __tablename__ = "services"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    desired: Mapped[int | None] = mapped_column(Integer)
    configured: Mapped[int | None] = mapped_column(Integer)  # config's count behind `desired`
    crash_state: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[float] = mapped_column(Float)


class DecisionRow(Base):
    """One scaling decision with its reasons and inputs ("why 7 replicas?")."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_service_ts", "service", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    service: Mapped[str] = mapped_column(String(64))
    desired: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]] = mapped_column(Json)
    inputs: Mapped[dict[str, Any]] = mapped_column(Json)


class LoadBucketRow(Base):
    """One service's load metric summed over a time bucket (history for the forecaster).

    ``total`` and ``samples`` instead of a mean, so partial buckets (written before and
    after a restart) and roll-ups to coarser buckets merge exactly.
    """

    __tablename__ = "load_history"

    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    step: Mapped[float] = mapped_column(Float, primary_key=True)
    start: Mapped[float] = mapped_column(Float, primary_key=True)
    total: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)


class ScalingEventRow(Base):
    """A one-off scaling event added through the API (config events live in the config)."""

    __tablename__ = "scaling_events"
    __table_args__ = (UniqueConstraint("service", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    min: Mapped[int | None] = mapped_column(Integer)
    multiplier: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class LeaseRow(Base):
    """The controller lease: one row per lease name, rewritten on every renewal.

    ``epoch`` grows by one at every take-over (the fencing token stamped on actions);
    ``serial`` grows at every write, so a take-over is a compare-and-swap on it.
    Times are the database's clock (PostgreSQL) or the host's (SQLite).
    """

    __tablename__ = "controller_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    serial: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(64))
    holder: Mapped[dict[str, Any]] = mapped_column(Json)
    duration: Mapped[float] = mapped_column(Float)
    acquired_at: Mapped[float] = mapped_column(Float)
    renewed_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class AutoscalePauseRow(Base):
    """An operator's ``skylift autoscale pause``: survives restarts until ``resume``."""

    __tablename__ = "autoscale_pauses"

    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
