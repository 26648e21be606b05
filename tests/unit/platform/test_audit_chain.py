"""The hash chain alone (no database): what verify reports for each kind of tampering."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from skylift.platform.audit import GENESIS, AuditRecord, record_hash, verify


def _chain(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        ts = t0 + timedelta(seconds=seq, microseconds=seq)
        data = {"client": "10.0.0.1", "n": seq}
        digest = record_hash(seq, ts, "eu", "auth.login", f"user{seq}", data, prev)
        records.append(AuditRecord(seq, ts, "eu", "auth.login", f"user{seq}", data, prev, digest))
        prev = digest
    return records


def test_intact_chain_verifies() -> None:
    result = verify(_chain(5))
    assert result.ok and result.records == 5 and result.head == _chain(5)[-1].hash


def test_edit_is_named() -> None:
    chain = _chain(5)
    chain[2] = dataclasses.replace(chain[2], data={"client": "10.0.0.2", "n": 3})
    assert verify(chain).problems == ["record 3: content does not match its hash (edited)"]


def test_removal_in_the_middle_and_at_the_start() -> None:
    chain = _chain(5)
    assert any("record 4: expected seq 3" in p for p in verify(chain[:2] + chain[3:]).problems)
    assert any("record 2: expected seq 1" in p for p in verify(chain[1:]).problems)


def test_reordering_is_detected() -> None:
    chain = _chain(5)
    swapped = [chain[0], chain[2], chain[1], chain[3], chain[4]]
    assert not verify(swapped).ok
    renumbered = [
        chain[0],
        dataclasses.replace(chain[2], seq=2),
        dataclasses.replace(chain[1], seq=3),
        *chain[3:],
    ]
    problems = verify(renumbered).problems
    assert any("record 2: prev_hash" in p for p in problems)
    assert any("edited" in p for p in problems)  # seq is hashed too


def test_timestamp_timezone_does_not_change_the_hash() -> None:
    rec = _chain(1)[0]
    local = rec.ts.astimezone(UTC).astimezone(datetime.now().astimezone().tzinfo)
    assert verify([dataclasses.replace(rec, ts=local)]).ok
