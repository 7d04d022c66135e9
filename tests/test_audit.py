"""The audit trail: a hash chain sealed by signed checkpoints, safe under concurrent writers."""

from __future__ import annotations

import json
import threading

import pytest
from cityfactory.governance import audit
from cityfactory.security.signing import public_key_pem
from cityfactory.storage.lake import open_lake
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture(params=["local", "s3"])
def trail(request):
    request.getfixturevalue("lake_uri" if request.param == "local" else "s3_lake_uri")
    lake = open_lake()
    for i in range(6):
        audit.append(lake, "ingest", {"rows": 100 + i})
    audit.seal(lake)
    return lake


def _rewrite(lake, seq, edit):
    key = f"audit/entries/{seq:012d}.json"
    entry = json.loads(lake.get_bytes(key))
    edit(entry)
    lake.put_bytes(key, json.dumps(entry).encode())


def test_an_intact_trail_verifies(trail):
    assert audit.verify(trail, public_key_pem()) == audit.Verified(6, 6)


def test_an_edited_entry_is_named(trail):
    _rewrite(trail, 3, lambda e: e["details"].update(rows=1))
    with pytest.raises(audit.AuditError, match="entry 3 .* content does not match its hash"):
        audit.verify(trail, public_key_pem())


def test_a_deleted_entry_is_named(trail):
    trail.delete(["audit/entries/000000000004.json"])
    with pytest.raises(audit.AuditError, match="entry 5 .* expected sequence number 4"):
        audit.verify(trail, public_key_pem())


def test_reordered_entries_are_named(trail):
    two, five = trail.get_bytes("audit/entries/000000000002.json"), trail.get_bytes("audit/entries/000000000005.json")
    trail.put_bytes("audit/entries/000000000002.json", five)
    trail.put_bytes("audit/entries/000000000005.json", two)
    with pytest.raises(audit.AuditError, match="entry 5 .* expected sequence number 2"):
        audit.verify(trail, public_key_pem())


def test_rehashed_edit_breaks_the_chain_or_the_seal(trail):
    def forge(entry):
        entry["details"]["rows"] = 1
        entry["hash"] = audit._digest(entry)

    _rewrite(trail, 6, forge)  # the forger fixes the entry's own hash: the checkpoint still catches it
    with pytest.raises(audit.AuditError, match="checkpoint .* seals entry 6 with a hash the chain does not have"):
        audit.verify(trail, public_key_pem())


def test_forged_checkpoint_and_unsealed_appends(trail):
    audit.append(trail, "deploy", {"node": "n1"})
    with pytest.raises(audit.AuditError, match="entry 7 .* appended without a valid checkpoint"):
        audit.verify(trail, public_key_pem())
    head = json.loads(trail.get_bytes("audit/entries/000000000007.json"))
    forged = {"seq": 7, "hash": head["hash"], "signature": Ed25519PrivateKey.generate().sign(head["hash"].encode()).hex()}
    trail.put_bytes("audit/checkpoints/000000000007.json", json.dumps(forged).encode())
    with pytest.raises(audit.AuditError, match="checkpoint .*000000000007.json: signature does not verify"):
        audit.verify(trail, public_key_pem())


def test_concurrent_writers_leave_one_valid_chain(trail):
    errors = []

    def writer(name):
        try:
            for i in range(10):
                audit.append(trail, "gate", {"writer": name, "i": i})
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"run-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audit.seal(trail)
    assert errors == []
    assert audit.verify(trail, public_key_pem()) == audit.Verified(26, 26)


def test_verify_audit_cli(trail, capsys):
    from cityfactory.cli import main

    assert main(["verify-audit", "--lake", trail.uri]) == 0
    assert "OK" in capsys.readouterr().out
    _rewrite(trail, 2, lambda e: e.update(event="nothing happened"))
    assert main(["verify-audit", "--lake", trail.uri]) == 1
    assert "entry 2" in capsys.readouterr().err
