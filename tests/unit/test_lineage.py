"""Which release is live and what a rollback returns to: the ledger's lineage, no daemon."""

from __future__ import annotations

from conveyor import ledger, terms
from conveyor.ledger import ReleaseRecord


def rec(
    rid: str,
    image: str,
    outcome: str = terms.SUCCEEDED,
    *,
    kind: str = "deploy",
    to: str | None = None,
    verified: bool = False,
) -> ReleaseRecord:
    return ReleaseRecord(
        id=rid,
        environment="qa",
        kind=kind,
        version=image,
        commit="c" * 40,
        services={"api": {"image_id": f"sha256:{image}"}},
        who="tester",
        started=float(rid[1:]),
        outcome=outcome,
        rollback_to=to,
        rollback_of=None,
        verified=verified,
    )


def ids(records: list[ReleaseRecord] | None) -> list[str]:
    return [r.id for r in records or []]


def test_a_rollback_never_targets_a_failed_interrupted_or_running_record() -> None:
    records = [
        rec("r0001", "v1"),
        rec("r0002", "v2"),
        rec("r0003", "v1", terms.FAILED),
        rec("r0004", "v3", terms.INTERRUPTED),
        rec("r0005", "v4", terms.RUNNING),
    ]
    live = ledger.current_live(records)
    previous = ledger.previous_live(records)
    assert live is not None and live.id == "r0002"
    assert previous is not None and previous.id == "r0001"


def test_two_rollbacks_in_a_row_go_further_back() -> None:
    records = [rec("r0001", "v1"), rec("r0002", "v2"), rec("r0003", "v3")]
    records.append(rec("r0004", "v2", kind="rollback", to="r0002"))
    assert ledger.rolled_back_ids(records) == {"r0003"}
    previous = ledger.previous_live(records)
    assert previous is not None and previous.id == "r0001"
    records.append(rec("r0005", "v1", kind="rollback", to="r0001"))
    stack, undone = ledger.lineage(records)
    assert ids(stack) == ["r0005"]
    assert undone == {"r0003", "r0004"}
    assert ledger.previous_live(records) is None


def test_undoing_a_rollback_with_to_pushes_the_rolled_back_release_again() -> None:
    records = [rec("r0001", "v1"), rec("r0002", "v2")]
    records.append(rec("r0003", "v1", kind="rollback", to="r0001"))
    records.append(rec("r0004", "v2", kind="rollback", to="r0002"))
    stack, _undone = ledger.lineage(records)
    assert ids(stack) == ["r0003", "r0004"]
    previous = ledger.previous_live(records)
    assert previous is not None and previous.id == "r0003"


def test_a_failed_rollback_changes_nothing() -> None:
    records = [rec("r0001", "v1"), rec("r0002", "v2")]
    records.append(rec("r0003", "v1", terms.FAILED, kind="rollback", to="r0001"))
    live = ledger.current_live(records)
    assert live is not None and live.id == "r0002"
    assert ledger.rolled_back_ids(records) == set()


def test_a_release_verified_before_its_process_died_is_live() -> None:
    records = [rec("r0001", "v1"), rec("r0002", "v2", terms.RUNNING, verified=True)]
    live = ledger.current_live(records)
    assert live is not None and live.id == "r0002"
    records[1].outcome = terms.INTERRUPTED
    live = ledger.current_live(records)
    assert live is not None and live.id == "r0002"
    records[1].verified = False
    live = ledger.current_live(records)
    assert live is not None and live.id == "r0001"
