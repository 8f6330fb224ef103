"""``GET /metrics``: Prometheus text with ingest counts, latency histograms and the shared
figures, on both stores, against a real server."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, event


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_ingest_and_time_routes(server: RunningServer) -> None:
    with server.client() as client:
        answer = client.post("/v1/events", json=[event(1), event(2), {"id": "bad"}])
        assert answer.status_code == 200
        client.post("/v1/events", json=[event(1)])  # a replay: one duplicate
        assert client.get("/v1/access/acme").status_code == 200
        scraped = client.get("/metrics", headers={"Authorization": ""})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = _samples(scraped.text)
    assert samples[("meterline_ingest_events_total", (("outcome", "accepted"),))] == 2
    assert samples[("meterline_ingest_events_total", (("outcome", "rejected"),))] == 1
    assert samples[("meterline_ingest_events_total", (("outcome", "duplicate"),))] == 1
    assert samples[("meterline_ingest_batches_total", ())] == 2
    assert samples[("meterline_ledger_head_sequence", ())] == 2
    ingest = (("method", "POST"), ("route", "/v1/events"))
    assert samples[("meterline_http_request_duration_seconds_count", ingest)] == 2
    access = (("method", "GET"), ("route", "/v1/access/{customer}"))
    assert samples[("meterline_http_request_duration_seconds_count", access)] == 1
    assert "acme" not in scraped.text  # aggregates only: no customer id leaks
