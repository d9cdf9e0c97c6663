"""The notes resource: the smallest API that still proves reads and writes reach the database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from refapi.flags import NEW_NOTES_VIEW, flags_of
from refapi.models import NOTE_TEXT_MAX, Note


def _notes_view(request: Request) -> bool:
    # The web UI's new notes view reads and writes through these endpoints: evaluating its
    # flag here counts their traffic (and errors) by variant, which a guarded ramp compares.
    return flags_of(request).evaluate(request, NEW_NOTES_VIEW)


router = APIRouter(prefix="/api/notes", tags=["notes"], dependencies=[Depends(_notes_view)])


def _assume_utc(moment: datetime) -> datetime:
    # SQLite drops the offset on the way in; every timestamp was written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=NOTE_TEXT_MAX)
    pinned: bool = False


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    text: str
    created_at: Annotated[datetime, AfterValidator(_assume_utc)]
    pinned: bool


def _session(request: Request) -> Iterator[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(_session)]


@router.get("")
def list_notes(
    session: DbSession, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[NoteOut]:
    pinned_then_newest = (
        select(Note)
        .order_by(Note.pinned.desc(), Note.created_at.desc(), Note.id.desc())
        .limit(limit)
    )
    return [NoteOut.model_validate(note) for note in session.scalars(pinned_then_newest)]


@router.post("", status_code=201)
def create_note(body: NoteIn, session: DbSession) -> NoteOut:
    note = Note(text=body.text, pinned=body.pinned)
    session.add(note)
    session.commit()
    return NoteOut.model_validate(note)


@router.get("/{note_id}", responses={404: {"description": "No note with this id"}})
def get_note(note_id: int, session: DbSession) -> NoteOut:
    note = session.get(Note, note_id)
    if note is None:
        raise HTTPException(status_code=404, detail=f"note {note_id} not found")
    return NoteOut.model_validate(note)
