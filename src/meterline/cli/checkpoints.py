"""``meterline checkpoints key|create|export``, ``meterline prove`` and ``meterline
verify-proof``: thin faces over ``ledger.checkpoints``, ``ledger.event_proofs`` and
``meterline.proofs``."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meterline.cli.options import DEFAULT_DB, DbOption, fail

checkpoints_app = typer.Typer(
    help="Signed checkpoints of every partition's head (Ed25519): make, export, key.",
    no_args_is_help=True,
)
_out = Console(soft_wrap=True, highlight=False)

KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="The checkpoint signing key (else METERLINE_CHECKPOINT_KEY or"
        " METERLINE_CHECKPOINT_KEY_FILE).",
    ),
]
PublicKeyOption = Annotated[
    str | None,
    typer.Option(
        "--public-key",
        help="Public key (base64, or a file holding it) to check signatures with; else"
        " METERLINE_CHECKPOINT_PUBLIC_KEY, else the configured signing key's.",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    """``fail`` on one line, without highlighting (a key or a path stays plain)."""
    return fail(" ".join(message.split()), code, highlight=False)


@checkpoints_app.command("key")
def key_command(
    out: Annotated[Path, typer.Option("--out", help="Where to write the new key (mode 600).")],
) -> None:
    """Create a checkpoint signing key file; print its public key (base64)."""
    from meterline.ledger.checkpoints import write_key_file

    try:
        public = write_key_file(out)
    except FileExistsError:
        raise _fail(f"{out} exists: a key is never overwritten") from None
    except OSError as error:
        raise _fail(f"{out}: {error}") from None
    _out.print(base64.b64encode(public).decode())


@checkpoints_app.command("create")
def create_command(db: DbOption = DEFAULT_DB, key_file: KeyFileOption = None) -> None:
    """Record a signed checkpoint of every partition's head now (none when nothing moved
    since the last one)."""
    from meterline.clock import system_clock_us
    from meterline.ledger.checkpoints import CheckpointKeyError, load_signer, make_checkpoint
    from meterline.ledger.event_ledger import open_store

    try:
        signer = load_signer(key_file)
    except CheckpointKeyError as error:
        raise _fail(str(error)) from None
    if signer is None:
        raise _fail(
            "no checkpoint key: pass --key-file, or set METERLINE_CHECKPOINT_KEY(_FILE)"
            " (`meterline checkpoints key --out FILE` makes one)"
        )
    store = open_store(db)
    try:
        made = make_checkpoint(store, signer, system_clock_us())
    finally:
        store.close()
    if made is None:
        _out.print("no partition head moved since the last checkpoint")
    else:
        _out.print(
            f"checkpoint {made.number}: {made.events:,} events, root"
            f" {base64.b64encode(made.root).decode()}"
        )


@checkpoints_app.command("export")
def export_command(
    db: DbOption = DEFAULT_DB,
    after: Annotated[int, typer.Option(help="Only checkpoints numbered above this.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Write the stored checkpoints as signed notes (docs/proofs.md), to anchor outside
    the database."""
    from meterline.ledger.checkpoints import export_notes
    from meterline.ledger.event_ledger import open_store

    store = open_store(db, create=False)
    try:
        text = export_notes(store, after)
    finally:
        store.close()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def prove_command(
    customer: Annotated[str, typer.Option(help="The event's customer.")],
    event_id: Annotated[str, typer.Option("--id", help="The event's id.")],
    db: DbOption = DEFAULT_DB,
    out: Annotated[Path | None, typer.Option(help="Write the proof here (JSON).")] = None,
) -> None:
    """An event's standalone proof (event -> batch -> partition -> signed checkpoint)."""
    from meterline.errors import StoreError
    from meterline.ledger.event_ledger import open_store
    from meterline.ledger.event_proofs import prove_event

    store = open_store(db, create=False)
    try:
        proof = prove_event(store, customer, event_id)
    except StoreError as error:
        raise _fail(str(error)) from None
    finally:
        store.close()
    if out is None:
        sys.stdout.write(proof.to_json() + "\n")
    else:
        out.write_text(proof.to_json() + "\n")


def verify_proof_command(
    file: Annotated[Path, typer.Argument(help="A proof written by `meterline prove`.")],
    public_key: PublicKeyOption = None,
) -> None:
    """Verify a proof with hashlib and the public key only; exit 1 naming the link that
    fails."""
    from meterline.ledger.checkpoints import CheckpointKeyError, load_public_key
    from meterline.proofs import EventProof, ProofError, verify_event_proof

    try:
        key = load_public_key(public_key)
    except CheckpointKeyError as error:
        raise _fail(str(error)) from None
    if key is None:
        raise _fail("no public key: pass --public-key or set METERLINE_CHECKPOINT_PUBLIC_KEY")
    try:
        proof = EventProof.from_json(file.read_text())
        from meterline.core.checkpoint_note import parse_note

        origin = parse_note(proof.checkpoint_note)[0].origin
        checkpoint = verify_event_proof(proof, key, origin)
    except (OSError, ValueError, ProofError) as error:
        raise _fail(str(error), 1) from None
    _out.print(
        f"[green]proven[/green]: event {proof.sequence} of partition {proof.partition} is in"
        f" checkpoint {checkpoint.number} of {checkpoint.origin}, signed by the key"
    )
