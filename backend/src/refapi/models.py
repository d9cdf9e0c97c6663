"""The database schema as typed ORM classes; migrations/ must produce exactly this."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, String, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NOTE_TEXT_MAX = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(NOTE_TEXT_MAX))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    # The server default lets the previous release, which knows no `pinned`, keep inserting.
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
