"""Shared fixtures: temporary ledgers on both stores, a fixed clock, a real server process.

Every test that stores anything asks ``new_db`` (or, for module-scoped data, ``databases``)
for its ledger location, and runs twice: on a SQLite file and on PostgreSQL (a fresh
schema of the ``test`` database per ledger, dropped at the end; ``METERLINE_TEST_POSTGRES``
names another server). ``pytest --store sqlite`` or ``--store postgresql`` runs one store;
under ``CI=true`` both are mandatory, and an unreachable PostgreSQL fails the run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest

from meterline.api.server import spawn_server
from meterline.clock import NOW_VARIABLE, SINCE_VARIABLE, parse_instant_us, system_clock_us
from meterline.keys import create_key
from meterline.ledger import Ledger, open_ledger
from meterline.ledger.event_ledger import open_store

# 2026-11-23T12:00:00Z: a fixed "now" so future-skew checks are deterministic.
FIXED_NOW_US = 1_795_435_200_000_000
DEMO_NOW = "2026-11-23T12:00:00Z"
"""The instant the demo's CLI tests run at: its month is October 2026, the reference month."""
_CLOCK_ANCHORS: dict[str, int] = {}

STORES = ("sqlite", "postgresql")
POSTGRES_URL = os.environ.get(
    "METERLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
Location = Path | str


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=(*STORES, "both"),
        default="both",
        help="which ledger store the store-parametrized tests run on (default: both)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = config.getoption("--store")
    if chosen == "both":
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("under CI=true the tests run on both stores (no --store)")
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("store_kind") if callspec else None
        (dropped if kind not in (None, chosen) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class Databases:
    """Fresh ledger locations on one store: SQLite files, or PostgreSQL schemas."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._schemas: list[str] = []

    def new(self, folder: Path, name: str = "ledger") -> Location:
        if self.kind == "sqlite":
            return folder / f"{name}.db"
        schema = f"t_{name.replace('-', '_')[:24]}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        return f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"

    def drop_all(self) -> None:
        if not self._schemas:
            return
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            for schema in self._schemas:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self._schemas.clear()


@pytest.fixture(scope="session", params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store this run of a store-parametrized test uses."""
    kind: str = request.param
    if kind == "postgresql":
        try:
            psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
        except psycopg.OperationalError as error:
            pytest.fail(
                f"PostgreSQL at {POSTGRES_URL} is unreachable ({error}); start it, or run"
                " `pytest --store sqlite` outside CI"
            )
    return kind


@pytest.fixture(scope="session")
def databases(store_kind: str) -> Iterator[Databases]:
    made = Databases(store_kind)
    try:
        yield made
    finally:
        made.drop_all()


@pytest.fixture
def new_db(databases: Databases, tmp_path: Path) -> Callable[..., Location]:
    """``new_db(name)``: a fresh, empty ledger location on this run's store."""
    return lambda name="ledger": databases.new(tmp_path, name)


@pytest.fixture
def ledger(new_db: Callable[..., Location]) -> Iterator[Ledger]:
    """A fresh ledger on this run's store, with the clock fixed at FIXED_NOW_US."""
    with open_ledger(new_db(), clock=lambda: FIXED_NOW_US) as opened:
        yield opened


def clock_env(instant: str) -> dict[str, str]:
    """The environment of a ``meterline`` process whose clock reads ``instant`` (RFC 3339)
    at the first process started with it in this test session, and runs on in real time, so
    that commands run one after another see time move forward."""
    since = _CLOCK_ANCHORS.setdefault(instant, system_clock_us())
    return {**os.environ, NOW_VARIABLE: instant, SINCE_VARIABLE: str(since)}


def clock_now_us(instant: str) -> int:
    """What the clock of ``clock_env(instant)`` reads now."""
    since = _CLOCK_ANCHORS.setdefault(instant, system_clock_us())
    return parse_instant_us(instant) + system_clock_us() - since


def event(number: int = 1, customer: str = "acme", **overrides: object) -> dict[str, object]:
    """A valid native event; ``overrides`` replace or add fields."""
    base: dict[str, object] = {
        "id": f"evt-{number}",
        "customer": customer,
        "type": "llm.completion",
        "timestamp": "2026-11-01T10:00:00Z",
        "properties": {"model": "gpt-4o", "input_tokens": 1200 + number, "output_tokens": 300},
    }
    base.update(overrides)
    return base


@dataclass
class RunningServer:
    """A ``meterline serve`` process on loopback with one key per scope."""

    url: str
    db: Location
    process: subprocess.Popen[bytes]
    keys: dict[str, str]

    def client(self, scope: str | None = "admin", **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_server(db: Location, port: int | None = None) -> RunningServer:
    """Start ``python -m meterline serve`` on ``db`` and wait until it answers health."""
    process, url = spawn_server(db, port)
    return RunningServer(url, db, process, {})


def make_keys(db: Location) -> dict[str, str]:
    """One key per scope, plus an ingest and a read key bound to customer 'acme'."""
    store = open_store(db)
    now = system_clock_us()
    keys = {
        scope: create_key(store, scope, now, name=scope)[1] for scope in ("ingest", "read", "admin")
    }
    keys["ingest-acme"] = create_key(store, "ingest", now, customer="acme")[1]
    keys["read-acme"] = create_key(store, "read", now, customer="acme")[1]
    store.close()
    return keys


@pytest.fixture
def server(new_db: Callable[..., Location]) -> Iterator[RunningServer]:
    """A real server process on a fresh ledger, keys in ``server.keys`` by scope."""
    db = new_db("served")
    keys = make_keys(db)
    running = start_server(db)
    running.keys = keys
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def postgres_schemas() -> Iterator[Callable[[Path, str], str]]:
    """Fresh PostgreSQL ledger locations for tests that need PostgreSQL itself (several
    partitions, row and advisory locks): ``new(folder, name)`` gives a schema's URL; every
    schema is dropped after the module. PostgreSQL unreachable is a failure, not a skip."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable ({error})", pytrace=False)
    made = Databases("postgresql")
    try:
        yield lambda folder, name: str(made.new(folder, name))
    finally:
        made.drop_all()
