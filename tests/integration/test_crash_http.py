"""Durability through HTTP: a 200 answer means the batch survives a SIGKILL of the server,
on either store."""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from meterline.ledger import open_ledger
from tests.conftest import Location, make_keys, start_server
from tests.integration.crash_writer import BATCH_EVENTS, batch
from tests.stores import rows as raw_rows

KILLS = 6


def _post_until_dead(
    url: str, token: str, first: int, acknowledged: set[int], failures: list[str]
) -> None:
    try:
        _post(url, token, first, acknowledged)
    except AssertionError as error:
        failures.append(str(error))


def _post(url: str, token: str, first: int, acknowledged: set[int]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        number = max(first - 1, 0)
        while True:
            try:
                response = client.post("/v1/events", json=batch(number))
            except httpx.TransportError:
                return
            body = response.json()
            assert response.status_code == 200 and body["rejected"] == body["conflict"] == 0
            if number == first - 1:
                assert body["duplicate"] == BATCH_EVENTS, "a re-sent acknowledged batch"
            acknowledged.add(number)
            number += 1


@pytest.mark.slow
def test_server_sigkill_keeps_every_acknowledged_batch(new_db: Callable[..., Location]) -> None:
    """Kill the server mid-stream repeatedly; every 200-answered batch is stored once."""
    db = new_db("served")
    token = make_keys(db)["ingest"]
    rng = random.Random(7)
    acknowledged: set[int] = set()
    failures: list[str] = []
    for _ in range(KILLS):
        server = start_server(db)
        first = max(acknowledged) + 1 if acknowledged else 0
        sender = threading.Thread(
            target=_post_until_dead, args=(server.url, token, first, acknowledged, failures)
        )
        sender.start()
        sender.join(timeout=rng.uniform(0.5, 1.5))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        sender.join(timeout=30)
        assert not sender.is_alive()
        assert not failures, failures
    assert len(acknowledged) >= KILLS
    rows = [tuple(row) for row in raw_rows(db, "SELECT customer, event_id FROM events")]
    assert max(Counter(rows).values()) == 1
    per_batch = Counter(int(event_id[1:].split("-")[0]) for _, event_id in rows)
    assert all(per_batch[number] == BATCH_EVENTS for number in acknowledged)
    assert set(per_batch.values()) == {BATCH_EVENTS}
    with open_ledger(db) as ledger:
        assert ledger.verify().intact
