"""The live stack: every engine of a stack publishes to the webhooks beside its ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import psycopg
import pytest

from meterline.billing.service import open_billing
from meterline.live.stack import live_stack
from tests.conftest import Location

NewDb = Callable[..., Location]


def test_the_engines_of_a_stack_publish_to_its_webhooks(new_db: NewDb) -> None:
    with open_billing(new_db(), lambda: 1_780_000_000_000_000) as billing:
        stack = live_stack(billing, allow_private=True)
        try:
            endpoint, _secret = stack.webhooks.subscribe(
                "http://127.0.0.1:9/hooks", ["*"], "stack test"
            )
            first, second = stack.engine(), stack.engine(pause_share=0.0, partitions=[0])
            assert second.partitions == [0] and second.pause_share == 0.0
            for number, engine in enumerate((first, second)):
                publish = engine.controls.publish
                assert publish is not None
                publish("control.fired", {"customer": "acme"}, f"event-{number}")
            pending = stack.webhooks.deliveries(endpoint.endpoint_id, "pending")
            assert len(pending) == 2
        finally:
            stack.close()
        # the stack closed the store it opened
        with pytest.raises((sqlite3.ProgrammingError, psycopg.Error)):
            stack.webhooks.deliveries(endpoint.endpoint_id, "pending")
