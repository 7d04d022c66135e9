"""Personal data never rests in plain text: encrypted or pseudonymised in bronze, sealed in raw."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cityfactory.config.scenarios import load_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry, RunLedger
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.security import encryption
from cityfactory.security.keys import get_secret
from cityfactory.storage.lake import open_lake
from support import FIXTURES

PARKING = load_scenario(FIXTURES / "scenarios" / "parking_sessions.yaml")
DAY = dt.date(2026, 3, 14)
PLATES = [f"B-CF {1000 + i}" for i in range(40)]
CARDS = [f"4111 1111 1111 {2000 + i % 7:04d}" for i in range(40)]


def _drop() -> bytes:
    rows = [f"{DAY} {8 + i // 4:02d}:{(i % 4) * 15:02d}:00,Z{i % 3},{p},{c},{1.5 + i}" for i, (p, c) in enumerate(zip(PLATES, CARDS))]
    rows.append(f"{DAY} 23:00:00,Z1,NOT-VALID 1,4111 0000 0000 9999,-3")  # rejected: negative amount
    return ("started_at,zone,plate,card,amount\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture
def ingested(lake_uri):
    lake = open_lake()
    lake.put_bytes(f"landing/parking_sessions/{DAY}/sessions-{DAY}.csv", _drop())
    entry = LedgerEntry("ingest", Kind.BATCH_INGESTED)
    result = ingest_days(PARKING, lake, [DAY], entry)
    RunLedger(lake, PARKING.name, "manual__test").record(entry)
    return lake, result


def test_lake_holds_no_plaintext(ingested):
    lake, result = ingested
    assert (result.rows_bronze, result.rows_quarantined) == (40, 1)
    secrets = [p.encode() for p in [*PLATES, "NOT-VALID 1"]] + [c.encode() for c in [*CARDS, "4111 0000 0000 9999"]]
    files = list(Path(lake.root).rglob("*"))
    assert any("quarantine" in str(f) for f in files) and any(".sealed" in str(f) for f in files)
    for path in (f for f in files if f.is_file()):
        blob = path.read_bytes()
        leaked = [s for s in secrets if s in blob]
        assert not leaked, f"{path} holds plaintext {leaked[:3]}"


def test_key_holders_read_encrypted_columns(ingested):
    lake, _ = ingested
    path = lake.path_of(f"bronze/parking_sessions/dt={DAY}/part-0.parquet")
    table = pq.read_table(path, decryption_properties=encryption.parquet_decryption())
    assert sorted(table["plate"].to_pylist()) == sorted(PLATES)
    # Without keys, the other columns stay readable (plaintext footer) but the plate does not.
    assert pq.read_table(path, columns=["zone", "amount"]).num_rows == 40
    with pytest.raises(OSError):
        pq.read_table(path, columns=["plate"])


def test_pseudonyms_are_keyed_and_joinable(ingested):
    lake, _ = ingested
    table = pq.read_table(
        lake.path_of(f"bronze/parking_sessions/dt={DAY}/part-0.parquet"),
        decryption_properties=encryption.parquet_decryption(),
    )
    by_plate = dict(zip(table["plate"].to_pylist(), table["card"].to_pylist()))
    key = get_secret(encryption.PSEUDONYM_KEY)
    for plate, card in zip(PLATES, CARDS):
        assert by_plate[plate] == hmac.new(key, card.encode(), hashlib.sha256).hexdigest()
    assert len(set(by_plate.values())) == len(set(CARDS)) == 7


def test_raw_is_sealed_and_recoverable(ingested):
    lake, _ = ingested
    [key] = lake.list("raw/parking_sessions")
    assert key.endswith(".sealed")
    assert encryption.unseal(lake.get_bytes(key), key) == _drop()
    tampered = bytearray(lake.get_bytes(key))
    tampered[-1] ^= 1
    with pytest.raises(encryption.DecryptionError, match="tampered"):
        encryption.unseal(bytes(tampered), key)


def test_the_report_says_how_personal_data_was_protected_and_shows_none(ingested):
    import json

    from cityfactory.governance import report

    lake, _ = ingested
    entries = RunLedger(lake, PARKING.name, "manual__test").entries()
    run = {"run_id": "manual__test", "run_type": "manual", "triggered_by": "test", "conf": {}, "code_version": "test"}
    trail = {"first_seq": None, "last_seq": None, "verified": True, "verified_entries": 0, "error": None}
    facts = report.assemble(PARKING, entries, run, {"ingest": "success"}, trail)
    columns = {c["column"]: (c["protection"], c["applied_batches"], c["batches"]) for c in facts["personal_data"]["columns"]}
    assert columns == {"plate": ("encrypt", 1, 1), "card": ("pseudonymise", 1, 1)}
    assert next(c for c in facts["controls"] if c["id"] == "DATA-4")["status"] == "passed"
    text = json.dumps(facts) + report.render_html(facts, "<svg></svg>")
    assert not [v for v in PLATES + CARDS if v in text], "the report shows no personal data"
