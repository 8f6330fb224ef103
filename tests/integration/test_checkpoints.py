"""Signed checkpoints on both stores: the key, making them (by hand and by a writer's
checkpointer), exporting them, and an event's standalone proof through the commands."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from meterline.cli import app
from meterline.core.checkpoint_note import parse_note
from meterline.ledger import Ledger
from meterline.ledger.checkpoints import (
    Checkpointer,
    export_notes,
    load_signer,
    make_checkpoint,
    split_notes,
    write_key_file,
)
from meterline.ledger.event_ledger import open_store
from tests.conftest import FIXED_NOW_US, Location, event

NewDb = Callable[..., Location]


def _ledger_with(db: Location, count: int, start: int = 0) -> None:
    with Ledger(open_store(db), lambda: FIXED_NOW_US) as ledger:
        customers = ("acme", "globex", "initech")
        events = [event(n, customer=customers[n % 3]) for n in range(start, start + count)]
        assert ledger.ingest(events).accepted == count


def test_checkpoints_chain_and_are_made_only_when_a_head_moved(
    new_db: NewDb, tmp_path: Path
) -> None:
    db = new_db("checkpoints")
    key = tmp_path / "key"
    write_key_file(key)
    signer = load_signer(key)
    assert signer is not None
    _ledger_with(db, 12)
    store = open_store(db)
    try:
        first = make_checkpoint(store, signer, FIXED_NOW_US)
        assert first is not None and first.number == 1 and first.events == 12
        assert make_checkpoint(store, signer, FIXED_NOW_US + 1) is None  # nothing moved
    finally:
        store.close()
    _ledger_with(db, 5, start=100)
    store = open_store(db)
    try:
        second = make_checkpoint(store, signer, FIXED_NOW_US + 2)
        assert second is not None and second.number == 2 and second.events == 17
        notes = split_notes(export_notes(store))
        assert [parse_note(note)[0] for note in notes] == [first, second]
        assert split_notes(export_notes(store, after_number=1)) == notes[1:]
    finally:
        store.close()


def test_a_writers_checkpointer_signs_heads_as_they_move(new_db: NewDb, tmp_path: Path) -> None:
    db = new_db("checkpointer")
    key = tmp_path / "key"
    write_key_file(key)
    signer = load_signer(key)
    assert signer is not None
    store = open_store(db)
    checkpointer = Checkpointer(store, signer, lambda: FIXED_NOW_US, interval_s=0.05)
    checkpointer.start()
    try:
        _ledger_with(db, 9)
        deadline = time.monotonic() + 30

        def signed_all() -> bool:
            notes = store.checkpoint_notes()
            return bool(notes) and parse_note(notes[-1][1])[0].events == 9

        # a checkpoint may also catch the heads before the append (0 events): wait for one
        # that holds the 9 events, then the heads stay put and so does the checkpoint count
        while not signed_all() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert signed_all(), "no checkpoint of the 9 events within 30 s"
        notes = store.checkpoint_notes()
        time.sleep(0.3)  # idle heads: no new checkpoint
        assert len(store.checkpoint_notes()) == len(notes)
    finally:
        checkpointer.stop()
        store.close()


def test_prove_and_verify_proof_through_the_commands(new_db: NewDb, tmp_path: Path) -> None:
    db = str(new_db("prove"))
    runner = CliRunner()
    key = tmp_path / "key"
    made = runner.invoke(app, ["checkpoints", "key", "--out", str(key)])
    assert made.exit_code == 0, made.output
    public = made.stdout.strip()
    assert len(base64.b64decode(public)) == 32
    again = runner.invoke(app, ["checkpoints", "key", "--out", str(key)])
    assert again.exit_code == 2 and "never overwritten" in again.stderr
    _ledger_with(db, 6)
    missing = runner.invoke(app, ["prove", "--db", db, "--customer", "acme", "--id", "evt-3"])
    assert missing.exit_code == 2 and "no checkpoint holds event" in missing.stderr
    unsigned = runner.invoke(app, ["checkpoints", "create", "--db", db], env={})
    assert unsigned.exit_code == 2 and "no checkpoint key" in unsigned.stderr
    created = runner.invoke(app, ["checkpoints", "create", "--db", db, "--key-file", str(key)])
    assert created.exit_code == 0 and "checkpoint 1: 6 events" in created.stdout
    proof_file = tmp_path / "proof.json"
    proved = runner.invoke(
        app,
        ["prove", "--db", db, "--customer", "acme", "--id", "evt-3", "--out", str(proof_file)],
    )
    assert proved.exit_code == 0, proved.output
    checked = runner.invoke(app, ["verify-proof", str(proof_file), "--public-key", public])
    assert checked.exit_code == 0 and "proven" in checked.stdout, checked.output
    proof = json.loads(proof_file.read_text())
    proof["event_body"] = proof["event_body"].replace("61", "62", 1)
    proof_file.write_text(json.dumps(proof))
    tampered = runner.invoke(app, ["verify-proof", str(proof_file), "--public-key", public])
    assert tampered.exit_code == 1 and "event" in tampered.stderr
    nobody = runner.invoke(app, ["prove", "--db", db, "--customer", "acme", "--id", "nope"])
    assert nobody.exit_code == 2 and "no event 'nope'" in nobody.stderr
