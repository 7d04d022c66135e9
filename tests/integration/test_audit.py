"""The audit trail as a transparency log, tried the way an attacker with write access to the lake
would: edit, remove, reorder, truncate, delete, re-chain and launder through the next seal, forge
checkpoints; on the local lake and the real S3 server. Also: concurrent writers, proofs, the CLI."""

from __future__ import annotations

import json
import threading

import pytest
from cityfactory.governance import audit, merkle
from cityfactory.security.signing import audit_public_key_pem
from cityfactory.storage.lake import open_lake


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


def _rechain(lake, first):
    """What an attacker without the key can do: recompute every hash from entry ``first`` on."""
    keys = lake.list(audit.ENTRIES)
    previous = json.loads(lake.get_bytes(keys[first - 2]))["hash"] if first > 1 else audit.GENESIS
    for position, key in enumerate(keys[first - 1:], first):
        entry = json.loads(lake.get_bytes(key))
        entry.update(seq=position, prev_hash=previous)
        entry["hash"] = audit._digest(entry)
        lake.delete([key])
        lake.put_bytes(f"{audit.ENTRIES}/{position:012d}.json", json.dumps(entry).encode())
        previous = entry["hash"]


def _verify(lake, **kwargs):
    return audit.verify(lake, audit_public_key_pem(), **kwargs)


def test_an_intact_trail_verifies_and_reads_only_new_entries_from_the_witness(trail):
    assert _verify(trail) == audit.Verified(6, 6, 6)
    audit.append(trail, "deploy", {"node": "n1"})
    audit.seal(trail)
    assert _verify(trail, full=False) == audit.Verified(7, 7, 0)  # the witness is at 7: only entry 7 checked


def test_an_edited_entry_is_named(trail):
    _rewrite(trail, 3, lambda e: e["details"].update(rows=999_999))
    with pytest.raises(audit.AuditError, match="entry 3 .* content does not match its hash"):
        _verify(trail)


def test_a_removed_or_reordered_entry_is_named(trail):
    trail.delete(["audit/entries/000000000004.json"])
    with pytest.raises(audit.AuditError, match="entry 5 .* expected sequence number 4"):
        _verify(trail)


def test_deleting_the_last_entries_with_their_checkpoints_is_refused(trail):
    audit.append_all(trail, [("approved", {"by": "dpo"}), ("deployed", {"node": "n2"})])
    audit.seal(trail)
    trail.delete([k for k in trail.list("audit") if k.endswith(("000000000007.json", "000000000008.json"))])
    with pytest.raises(audit.AuditError, match="older than the witnessed size 8"):
        _verify(trail)
    with pytest.raises(audit.AuditError, match="entries were removed"):
        audit.seal(trail)


def test_deleting_the_whole_trail_is_refused(trail):
    trail.delete(trail.list("audit"))
    with pytest.raises(audit.AuditError, match="empty or its checkpoints are gone, but the witness saw 6"):
        _verify(trail)


def test_an_erased_and_rechained_entry_is_not_laundered_by_the_next_seal(trail):
    trail.delete(["audit/entries/000000000003.json"])
    _rechain(trail, 3)  # no key needed: 5 entries, a consistent hash chain
    audit.append(trail, "run_report", {"sha256": "ab" * 32})  # the next pipeline run
    with pytest.raises(audit.AuditError, match="entry 6 .* is not the entry the trusted checkpoint signed"):
        audit.seal(trail)
    with pytest.raises(audit.AuditError):
        _verify(trail)


def test_a_forged_approval_at_the_head_is_not_laundered(trail):
    head = json.loads(trail.get_bytes("audit/entries/000000000006.json"))
    forged = {"seq": 7, "at": head["at"], "event": "approved", "details": {"by": "attacker"}, "prev_hash": head["hash"]}
    forged["hash"] = audit._digest(forged)  # well-formed and chained, but the attacker has no audit key
    trail.put_bytes("audit/entries/000000000007.json", json.dumps(forged).encode())
    with pytest.raises(audit.AuditError, match="entry 7 .* not signed with the audit key"):
        audit.seal(trail)  # the next pipeline run refuses to sign it
    with pytest.raises(audit.AuditError, match="entry 7"):
        _verify(trail)
    assert not trail.exists("audit/checkpoints/000000000007.json")


def test_a_forged_or_foreign_checkpoint_is_refused(trail):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = "audit/checkpoints/000000000006.json"
    stored = json.loads(trail.get_bytes(key))
    stored["note"] = stored["note"].replace("\n6\n", "\n60\n", 1)
    trail.put_bytes(key, json.dumps(stored).encode())
    with pytest.raises(audit.AuditError, match="signature does not verify"):
        _verify(trail)
    note = audit._sign(Ed25519PrivateKey.generate(), audit.origin(trail), 6, bytes(32))
    trail.put_bytes(key, json.dumps({**stored, "note": note}).encode())
    with pytest.raises(audit.AuditError, match="another key than the trusted audit key"):
        _verify(trail)


def test_a_checkpoint_signs_origin_size_and_root_with_its_own_key(trail):
    from cityfactory.security.signing import load_public_key, public_key_pem

    latest = audit._latest_in_lake(trail, load_public_key(audit_public_key_pem()))
    body = latest.note.split("\n\n")[0].split("\n")
    assert body[0] == audit.origin(trail) and body[1] == "6" and len(latest.root) == 32 and body[3].startswith("issued ")
    assert audit_public_key_pem() != public_key_pem()  # not the bundle key
    with pytest.raises(audit.AuditError):
        audit.verify(trail, public_key_pem())


def test_verify_needs_only_the_public_key_and_never_creates_one(trail, tmp_path, monkeypatch, capsys):
    from cityfactory.cli import main

    public = tmp_path / "audit-public.pem"
    public.write_bytes(audit_public_key_pem())
    monkeypatch.setenv("CITYFACTORY_HOME", str(tmp_path / "a-machine-without-keys"))
    monkeypatch.setenv("CITYFACTORY_AUDIT_WITNESS", str(audit.witness_path(trail)))
    assert main(["verify-audit", "--lake", trail.uri]) == 1
    assert "no audit public key" in capsys.readouterr().err
    assert not (tmp_path / "a-machine-without-keys" / "keys").exists()
    assert main(["verify-audit", "--lake", trail.uri, "--public-key", str(public)]) == 0
    assert "6 entries" in capsys.readouterr().out


def test_inclusion_and_consistency_proofs(trail, capsys):
    from cityfactory.cli import main

    audit.append_all(trail, [("deploy", {"n": i}) for i in range(5)])
    audit.seal(trail)
    assert main(["audit-proof", "--lake", trail.uri, "--entry", "4"]) == 0
    proof = json.loads(capsys.readouterr().out)
    leaf, path = bytes.fromhex(proof["leaf_hash"]), [bytes.fromhex(h) for h in proof["proof"]]
    assert proof["tree_size"] == 11
    assert merkle.verify_inclusion(3, 11, leaf, path, bytes.fromhex(proof["root"]))
    assert not merkle.verify_inclusion(4, 11, leaf, path, bytes.fromhex(proof["root"]))
    assert main(["audit-proof", "--lake", trail.uri, "--since-size", "6"]) == 0
    consistency = json.loads(capsys.readouterr().out)
    assert merkle.verify_consistency(6, 11, bytes.fromhex(consistency["old_root"]), bytes.fromhex(consistency["new_root"]),
                                     [bytes.fromhex(h) for h in consistency["proof"]])


def test_concurrent_writers_leave_one_valid_log(trail):
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
    assert _verify(trail) == audit.Verified(26, 26, 26)


def test_verify_audit_cli(trail, capsys):
    from cityfactory.cli import main

    assert main(["verify-audit", "--lake", trail.uri]) == 0
    assert "OK" in capsys.readouterr().out
    _rewrite(trail, 2, lambda e: e.update(event="nothing happened"))
    assert main(["verify-audit", "--lake", trail.uri]) == 1
    assert "entry 2" in capsys.readouterr().err
