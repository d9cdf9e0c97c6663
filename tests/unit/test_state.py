"""The state volume's writes without a daemon: staged uploads, refusals, the reserve."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import docker.errors
import pytest

from conveyor import state
from conveyor.errors import StateUnwritable
from conveyor.ledger import Ledger
from conveyor.state import StateStore

ENOSPC = "write /state/.incoming/x: no space left on device"
EROFS = "mkdir /state/ledger/r0002: read-only file system"


class Volume:
    """A container whose volume holds ``free`` bytes; extracts uploads as the engine does,
    member by member, stopping at the first one that does not fit (and leaving it torn)."""

    def __init__(self, free: int, *, read_only: bool = False) -> None:
        self.free = free
        self.read_only = read_only
        self.files: dict[str, bytes] = {}
        self.uploads = 0

    def put_archive(self, folder: str, data: bytes) -> None:
        self.uploads += 1
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if self.read_only:
                    raise docker.errors.APIError("500 Server Error", explanation=EROFS)
                if member.islnk():
                    self.files[member.name] = self.files[member.linkname]
                    continue
                handle = tar.extractfile(member)
                body = handle.read() if handle else b""
                self.free += len(self.files.pop(member.name, b""))
                if len(body) > self.free:
                    self.files[member.name] = b""  # torn: created, never filled
                    raise docker.errors.APIError("500 Server Error", explanation=ENOSPC)
                self.free -= len(body)
                self.files[member.name] = body


def store_on(volume: Volume) -> StateStore:
    store = StateStore(SimpleNamespace(), "qa", "img", host="h1")
    store._container = volume  # type: ignore[assignment]  # as _find() leaves it
    return store


def visible(volume: Volume) -> dict[str, bytes]:
    """What readers see: everything outside the staging folder and the reserve."""
    hidden = (state.INCOMING + "/", state.RESERVE)
    return {k: v for k, v in volume.files.items() if not k.startswith(hidden)}


def test_a_write_is_staged_then_linked_in_one_upload() -> None:
    volume = Volume(free=10_000)
    store_on(volume).write("ledger/r0001/a.json", b"{}")
    assert volume.uploads == 1
    assert visible(volume) == {"ledger/r0001/a.json": b"{}"}
    [staged] = [k for k in volume.files if k.startswith(".incoming/")]
    assert volume.files[staged] == b"{}"


def test_a_full_volume_shows_no_torn_file_and_says_what_to_do() -> None:
    volume = Volume(free=10)
    with pytest.raises(StateUnwritable) as refused:
        store_on(volume).write("ledger/r0002/b.json", b"x" * 100)
    assert visible(volume) == {}, "the torn upload stays staged, out of every reader's sight"
    message = str(refused.value)
    assert "the release ledger" in message and "conveyor-qa-state on host h1" in message
    assert "it is full (no space left on device) — free space on it, then re-run" in message
    assert "\n" not in message


def test_a_read_only_volume_says_so() -> None:
    with pytest.raises(StateUnwritable, match=r"it is read-only — make it writable, then re-run"):
        store_on(Volume(free=10_000, read_only=True)).write("audit/x.json", b"{}")


def test_the_reserve_records_how_a_run_ended_on_a_full_volume_and_only_then() -> None:
    volume = Volume(free=state.RESERVE_BYTES + 50)
    store = store_on(volume)
    store.write_setting_reserve("ledger/r0002/running.json", b"r" * 40)
    assert len(volume.files[state.RESERVE]) == state.RESERVE_BYTES
    with pytest.raises(StateUnwritable):  # the intent before a switch: never from the reserve
        store.write("ledger/r0002/intent.json", b"i" * 40)
    assert not store.reserve_used
    store.write_using_reserve("ledger/r0002/failed.json", b"f" * 40)
    assert store.reserve_used
    assert set(visible(volume)) == {"ledger/r0002/running.json", "ledger/r0002/failed.json"}
    assert volume.files[state.RESERVE] == b""
    # A spent reserve needs its room back: the next run does not start, nothing torn shows.
    with pytest.raises(StateUnwritable, match="full"):
        store.write_setting_reserve("ledger/r0003/running.json", b"r" * 40)
    assert "ledger/r0003/running.json" not in visible(volume)


def test_setting_the_reserve_again_needs_no_more_room_than_it_had() -> None:
    volume = Volume(free=state.RESERVE_BYTES + 100)
    store = store_on(volume)
    store.write_setting_reserve("ledger/r0001/a.json", b"a" * 40)
    store.write_setting_reserve("ledger/r0002/b.json", b"b" * 40)
    assert set(visible(volume)) == {"ledger/r0001/a.json", "ledger/r0002/b.json"}


def test_a_reserve_that_cannot_be_given_back_still_fails_with_one_line() -> None:
    store = store_on(Volume(free=10_000, read_only=True))
    with pytest.raises(StateUnwritable, match="read-only"):
        store.write_using_reserve("ledger/r0002/failed.json", b"{}")
    assert not store.reserve_used


def test_logs_the_volume_refuses_are_skipped_not_raised() -> None:
    # A failed run saves its containers' logs while it stops them: that must not stop it.
    book = Ledger(store_on(Volume(free=5)))
    assert book.save_log("r0002", "h1-api", "a long log line") is None
    assert Ledger(store_on(Volume(free=1000))).save_log("r0002", "h1-api", "ok") == (
        "logs/r0002/h1-api.log"
    )


def test_an_unknown_refusal_quotes_the_engine() -> None:
    said, action = state.refusal(docker.errors.APIError("500", explanation="i/o error"))
    assert "i/o error" in said and action == "fix the volume"
