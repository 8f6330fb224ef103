"""``meterline demo``: a synthetic month of AI usage and the story told about it
(``meterline.demo.story``)."""

from __future__ import annotations

from typing import Annotated

import typer

from meterline.cli.options import console


def demo(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="Demo ledger: a SQLite file (the default) or a postgresql:// URL; rerunning"
            " on the same ledger adds nothing.",
        ),
    ] = "meterline-demo.db",
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the API after the story.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8787,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic month.")] = 7,
    scale: Annotated[float, typer.Option(help="Multiply the usage volume.")] = 1.0,
) -> None:
    """Ingest a realistic synthetic month of AI usage and tell what happened."""
    from meterline.demo.story import run_demo

    run_demo(db, console, seed=seed, scale=scale, serve_port=port if serve_after else None)
