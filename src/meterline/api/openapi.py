"""The OpenAPI document at ``/openapi.json``, made to tell the truth.

FastAPI derives the paths, the parameters and their bounds from the routes. ``finish``
adds what it cannot see, in one place:

- the one error shape (``#/components/schemas/Error``) on every 4xx and 5xx answer, and
  a 500 on every operation (an unexpected error answers in that shape too);
- the bearer API key (``securitySchemes.apiKey``); every operation needs it but the
  public ones (``PUBLIC_OPERATIONS``), and says so with its 401 (``WWW-Authenticate``);
  a route that needs a scope declares its 403 itself;
- the bodies handlers read themselves, from the msgspec structs they decode with
  (``json_body``), so the document and the decoder cannot disagree;
- no ``422 HTTPValidationError``: FastAPI declares it for every route with parameters,
  but this API answers a bad parameter ``400 invalid_parameter`` (in the error shape);
- no NUL (U+0000) in the text of parameters and request bodies (``NO_NUL``): the API
  refuses it (PostgreSQL cannot hold it in text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import FastAPI

from meterline.api.bodies import JSON_NESTING_LEVELS_MAX
from meterline.core.limits import IngestLimits
from meterline.core.money import AMOUNT_FRACTION_DIGITS_MAX, AMOUNT_INTEGER_DIGITS_MAX
from meterline.core.outcomes import BatchOutcome

SECURITY_SCHEME = "apiKey"
PUBLIC_OPERATIONS = frozenset({("get", "/v1/health"), ("get", "/metrics")})
"""Operations that answer without a key."""

PATH_EXAMPLES: dict[str, Any] = {
    "customer": "acme-copilot",
    "invoice_id": "INV-000001",
    "n": 1,
    "grant_id": "G-000001",
}
"""An example value of each common path parameter, in the shape the API makes them."""

ERROR_REF = {"$ref": "#/components/schemas/Error"}
_REF_TEMPLATE = "#/components/schemas/{name}"
_JSON = "application/json"

ERROR_CODES = (
    "unauthorized",
    "forbidden",
    "invalid_parameter",
    "invalid_input",
    "malformed_json",
    "nesting_too_deep",
    "batch_too_large",
    "payload_too_large",
    "unsupported_content_type",
    "not_found",
    "method_not_allowed",
    "billing_conflict",
    "endpoint_disabled",
    "invalid_configuration",
    "internal_error",
    "live_unavailable",
    "stream_unavailable",
    "ingest_lagging",
)

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "Every error answer: `error.code` is stable, `error.message` is for people.",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "One of: " + ", ".join(ERROR_CODES)},
                "message": {"type": "string"},
                "field": {
                    "type": "string",
                    "description": "The parameter or body field at fault, when there is one",
                },
                "position": {
                    "type": ["integer", "null"],
                    "description": "malformed_json: the byte offset of the problem",
                },
                "accepted": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "unsupported_content_type: the content types accepted",
                },
                "errors": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Every problem found, when there are several",
                },
                "partition": {
                    "type": "integer",
                    "description": "ingest_lagging: the partition lagging most",
                },
                "lag_ms": {
                    "type": "number",
                    "description": "ingest_lagging: how long its oldest undecided message waited",
                },
                "bound_ms": {
                    "type": "integer",
                    "description": "ingest_lagging: the ingest lag bound",
                },
                "retry_after_ms": {
                    "type": "integer",
                    "description": "ingest_lagging: when to retry (finer than Retry-After)",
                },
            },
        }
    },
}

DECIMAL = re.compile(
    rf"-?[0-9]{{1,{AMOUNT_INTEGER_DIGITS_MAX}}}(\.[0-9]{{1,{AMOUNT_FRACTION_DIGITS_MAX}}})?"
)
"""An amount as the API accepts it in a string: an exact decimal, no exponent or spaces,
at most 18 digits before the point and 12 after (money arithmetic carries 60 digits and
refuses to round: a longer amount would make every later balance of its customer fail)."""

INSTANT_MIN = datetime(1970, 1, 1, tzinfo=UTC)
INSTANT_MAX = datetime(9000, 1, 1, tzinfo=UTC)
"""Instants a parameter or a body may name: from the Unix epoch (inclusive) to the year
9000 (exclusive), so the billing periods around them stay inside the calendar."""
INSTANT_PATTERN = "^(19[7-9][0-9]|[2-8][0-9]{3})-"
"""The years of ``INSTANT_MIN`` to ``INSTANT_MAX``, for the document (with ``date-time``)."""


def instant_schema(description: str) -> dict[str, Any]:
    """The JSON Schema of an instant: RFC 3339 with a zone, within the instant range."""
    return {
        "format": "date-time",
        "pattern": INSTANT_PATTERN,
        "description": f"{description} (RFC 3339 with a zone, years 1970 to 8999)",
    }


Amount = Annotated[
    str,
    msgspec.Meta(
        description='An exact decimal number as a string (e.g. "100", "-12.50")',
        extra_json_schema={"pattern": f"^{DECIMAL.pattern}$"},
    ),
]
NO_NUL = "^[^\\u0000]*$"
"""The pattern of text the API accepts in parameters and bodies: no NUL (U+0000)."""

Reason = Annotated[
    str,
    msgspec.Meta(
        description="Why, in words (kept with the record; not blank)",
        extra_json_schema={"pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"},
    ),
]
Instant = Annotated[
    str,
    msgspec.Meta(extra_json_schema=instant_schema("e.g. 2026-12-01T00:00:00Z")),
]


_STRUCTS: dict[str, type[Any]] = {}
"""The msgspec structs named by ``json_body`` and ``struct_ref``, put into components."""
_REQUESTS: set[str] = set()
"""Those of them that are request bodies (their text refuses NUL)."""


def struct_ref(kind: type[Any]) -> dict[str, str]:
    """A ``$ref`` to ``kind``'s JSON Schema (added to the document's components)."""
    _STRUCTS[kind.__name__] = kind
    return {"$ref": _REF_TEMPLATE.format(name=kind.__name__)}


def json_body(kind: type[Any], description: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON body decoded as the struct ``kind``."""
    _REQUESTS.add(kind.__name__)
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {_JSON: {"schema": struct_ref(kind)}},
        }
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {_JSON: {"schema": schema}}}


def _text(length_max: int, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": length_max,
        "pattern": r"\S",
        "description": description,
    }


def ingest_body(limits: IngestLimits, media: Iterable[str]) -> dict[str, Any]:
    """The body of ``POST /v1/events`` for each accepted media type, under ``limits``."""
    event = {
        "title": "Event",
        "type": "object",
        "required": ["id", "customer", "type", "timestamp"],
        "additionalProperties": False,
        "properties": {
            "id": _text(limits.id_length_max, "Idempotency key, unique per customer."),
            "customer": _text(limits.customer_length_max, "Who is billed."),
            "type": _text(limits.type_length_max, "What happened, e.g. llm.completion."),
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "RFC 3339 with a zone; at most "
                f"{limits.future_skew_us // 1_000_000} s in the future.",
            },
            "properties": {"type": ["object", "null"], "additionalProperties": True},
            "source": _text(limits.source_length_max, "Where the event came from."),
        },
    }
    cloudevent = {
        "title": "CloudEvent",
        "type": "object",
        "description": "CloudEvents 1.0, structured mode: `subject` is the customer, `time`"
        " the timestamp, `data` (JSON) the properties. `data_base64` is refused.",
        "required": ["specversion", "id", "source", "type", "subject"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": _text(limits.id_length_max, "Idempotency key, unique per subject."),
            "source": _text(limits.source_length_max, "CloudEvents source."),
            "type": _text(limits.type_length_max, "What happened."),
            "subject": _text(limits.customer_length_max, "The customer."),
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {
                "type": ["string", "null"],
                "description": "A JSON media type; absent or null means JSON",
            },
            "data": {"type": ["object", "null"], "additionalProperties": True},
        },
    }

    def batch(item: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "array",
            "maxItems": limits.batch_events_max,
            "items": {
                "description": f"A {item['title']}. An item that is not one is rejected on its"
                " own (its outcome names each field); the others are still taken.",
                "anyOf": [item, {}],
            },
        }

    schemas = {
        "application/json": {"oneOf": [event, batch(event)]},
        "application/cloudevents+json": cloudevent,
        "application/cloudevents-batch+json": batch(cloudevent),
    }
    return {
        "requestBody": {
            "required": True,
            "description": "One event or an array of them (at most "
            f"{limits.batch_events_max:,} events, {limits.batch_bytes_max:,} bytes, JSON "
            f"nested at most {JSON_NESTING_LEVELS_MAX} levels). CloudEvents binary mode: any"
            " JSON type with "
            "`ce-specversion` and the other `ce-*` headers; the body is `data`.",
            "content": {kind: {"schema": schemas[kind]} for kind in media},
        }
    }


HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "sequence", "head_hash"],
    "properties": {
        "status": {"const": "ok"},
        "sequence": {"type": "integer", "minimum": 0},
        "head_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "through": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "description": "The ledger's consistent cut: each partition's last sequence.",
        },
    },
}
EVENT_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["events", "next_after"],
    "properties": {
        "events": {
            "type": "array",
            "items": {
                "title": "StoredEvent",
                "type": "object",
                "required": [
                    "id",
                    "customer",
                    "type",
                    "timestamp",
                    "sequence",
                    "ingested_at",
                    "hash",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "customer": {"type": "string"},
                    "type": {"type": "string"},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "properties": {"type": "object"},
                    "source": {"type": "string"},
                    "sequence": {"type": "integer", "minimum": 1},
                    "ingested_at": {"type": "string", "format": "date-time"},
                    "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        },
        "next_after": {
            "type": ["integer", "null"],
            "description": "Pass as `after` for the next page; null when there is none",
        },
    },
}


def batch_outcome_ref() -> dict[str, str]:
    return struct_ref(BatchOutcome)


# -- finishing the document ----------------------------------------------------------------


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without FastAPI's ``anyOf [..., null]`` for an optional one: a
    parameter on the wire is text or absent, never JSON null."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    if rest.get("default", "") is None:
        del rest["default"]
    return {**kept[0], **rest}


def no_nul(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every string in it that has no pattern given ``NO_NUL`` (in place)."""
    if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
        schema["pattern"] = NO_NUL
    for option in schema.get("anyOf", []):
        no_nul(option)
    for name in ("items", "additionalProperties"):
        if isinstance(schema.get(name), dict):
            no_nul(schema[name])
    for item in schema.get("properties", {}).values():
        no_nul(item)
    return schema


def _refs(value: Any) -> Iterator[str]:
    """The component names ``value``'s ``$ref``s point to, at any depth."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _referenced(paths: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """The schemas of ``found`` the operations refer to, directly or through another:
    a struct whose routes this application does not mount stays out of its document."""
    wanted: set[str] = set()
    pending = [name for name in _refs(paths) if name in found]
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending += [inner for inner in _refs(found[name]) if inner in found]
    return {name: schema for name, schema in found.items() if name in wanted}


def _components(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    if _STRUCTS:
        _, found = msgspec.json.schema_components(
            tuple(_STRUCTS.values()), ref_template=_REF_TEMPLATE
        )
        found = _referenced(document.get("paths", {}), found)
        schemas.update(found)
        for name in _REQUESTS & found.keys():
            no_nul(schemas[name])
    if not schemas:
        components.pop("schemas")
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mlk_<key id>_<secret>",
            "description": "An API key (`meterline keys create --scope ingest|read|admin"
            " [--customer C]`), as `Authorization: Bearer mlk_...`.",
        }
    }


def _operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    automatic = responses.get("422", {})
    if "HTTPValidationError" in str(automatic.get("content", "")):
        del responses["422"]
    for parameter in operation.get("parameters", []):
        parameter["schema"] = no_nul(_not_null(parameter.get("schema", {})))
        if parameter["in"] == "path" and parameter["name"] in PATH_EXAMPLES:
            parameter.setdefault("example", PATH_EXAMPLES[parameter["name"]])
    if operation.get("parameters"):  # any of them may hold NUL, if nothing else
        responses.setdefault("400", {"description": "A parameter is invalid (`field` names it)"})
    if (method, path) in PUBLIC_OPERATIONS:
        operation["security"] = []
    else:
        operation["security"] = [{SECURITY_SCHEME: []}]
        responses.setdefault("401", {"description": "Missing, unknown or revoked API key"})
        responses["401"]["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
        }
    responses.setdefault(
        "500", {"description": "Unexpected server error: logged, answered without internals"}
    )
    for status in ("429", "503"):
        if status in responses:
            responses[status]["headers"] = {
                "Retry-After": {"required": True, "schema": {"type": "string"}}
            }
    for status, response in responses.items():
        if status[0] not in "45":
            continue
        content = response.get("content")
        if not content or all(not media.get("schema") for media in content.values()):
            response["content"] = {_JSON: {"schema": ERROR_REF}}
    operation["responses"] = dict(sorted(responses.items()))


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's document in place (see the module) and return it."""
    _components(document)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            _operation(path, method, operation)
    return document


def install(app: FastAPI) -> None:
    """Serve ``finish``'s document at ``app.openapi_url`` (built once, on first ask)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            finish(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
