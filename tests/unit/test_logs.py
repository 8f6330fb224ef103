"""JSON-lines logs carry the call's fields."""

from __future__ import annotations

import json
import logging

from meterline.logs import JsonFormatter


def test_a_record_is_one_json_object_with_its_extras() -> None:
    record = logging.LogRecord(
        "meterline.stream", logging.WARNING, "x.py", 1, "conflict %s", ("e1",), None
    )
    record.customer = "acme"
    line = JsonFormatter("meterline-worker").format(record)
    document = json.loads(line)
    assert "\n" not in line
    assert document["message"] == "conflict e1"
    assert document["level"] == "warning" and document["component"] == "meterline-worker"
    assert document["logger"] == "meterline.stream" and document["customer"] == "acme"
    assert document["time"].endswith("+00:00")
