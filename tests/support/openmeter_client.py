"""OpenMeter's own Python client (``openmeter``) ingesting into meterline, on its own venv.

Run by tests/integration/test_openmeter_ingest.py on the interpreter of the venv
``tests.support.client_venvs.OPENMETER``: the client requires ``cloudevents<2`` and the
tests share the 2.x API, so it is not installed beside them. Once the client is imported
it prints ``ready`` (exiting 3 instead if the import fails), then reads one JSON line on
standard input (meterline's URL and an ingest key, the subject, the event time, the
event ids to use), makes the calls a product would make, and prints one JSON object on
standard output: for each call the HTTP status the client got (it raises on anything but
204, and the status of what it raised is reported). The test asserts on it and on the
events meterline stored.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime
from importlib.metadata import version
from typing import Any

try:
    from corehttp.exceptions import HttpResponseError
    from openmeter import Client
    from openmeter.models import Event
except Exception:  # a venv whose client does not import: the test rebuilds it
    traceback.print_exc()
    sys.exit(3)  # tests.support.client_venvs.IMPORT_FAILED_EXIT


def status(response: Any, deserialized: object, headers: object) -> int:
    """The ``cls`` hook of the client's operations: the status it accepted."""
    return int(response.http_response.status_code)


def answered(call: Any, *arguments: Any) -> dict[str, Any]:
    """The status of one call, and what the client raised if it did."""
    try:
        return {"status": call(*arguments, cls=status), "raised": None}
    except HttpResponseError as error:
        return {"status": error.status_code, "raised": type(error).__name__}


def main() -> None:
    print("ready", flush=True)
    setup = json.loads(sys.stdin.readline())
    client = Client(endpoint=setup["url"], token=setup["ingest_key"])
    at = datetime.fromisoformat(setup["time"])

    def event(event_id: str, tokens: int) -> Event:
        return Event(
            id=event_id,
            source="my-app",
            specversion="1.0",
            type="prompt",
            subject=setup["subject"],
            time=at,
            data={"tokens": tokens, "model": "gpt-4o", "type": "input"},
        )

    single, first, second, plain = setup["ids"]
    events = client.events
    calls = {
        "single": answered(events.ingest_event, event(single, 100)),
        "retry": answered(events.ingest_event, event(single, 100)),  # the same id
        "batch": answered(events.ingest_events, [event(first, 200), event(second, 300)]),
        "json": answered(events.ingest_events_json, event(plain, 400)),
        # no subject: meterline answers 400, which the client raises
        "invalid": answered(
            events.ingest_event, {"specversion": "1.0", "id": "x", "source": "s", "type": "t"}
        ),
    }
    json.dump(
        {
            "calls": calls,
            "openmeter_version": version("openmeter"),
            "cloudevents_version": version("cloudevents"),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
