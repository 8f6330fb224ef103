"""An API replica's CPU per event, alone: its own nats-server, one `meterline serve --stream`
on a fresh 2-partition PostgreSQL ledger, and 4 keep-alive connections posting
``meterline bench scale``'s load batches (1,000 events each). No worker runs: JetStream
stores what the replica publishes, so the figure is the replica's work only (user and
system CPU from /proc, from the first timed request to the last answer).

    python3 benchmarks/api_cpu.py A=/work/main/src,B=src --rounds 3 --events 30000

Each label's source tree is the replica's PYTHONPATH; runs alternate A, B, A, B, ... and
medians are printed. With ``--refused`` the replica keeps the ingest lag bound (50 ms):
with no worker deciding anything, every partition lags once the first batch is stored,
and every timed batch is refused (429): the figure is what a refusal costs per event.
Needs PostgreSQL (``METERLINE_BENCH_POSTGRES``, as ``bench scale``) and ``nats-server``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from meterline.api.server import free_port
from meterline.bench.children import NATS_SERVER
from meterline.bench.scale import POSTGRES_URL
from meterline.bench.scale_load import floor_bodies
from meterline.bench.scale_setup import Schemas, prepare_ledger

CONNECTIONS = 4
"""Keep-alive connections posting at once (as ``bench scale``'s two loaders x two)."""

READY_TIMEOUT_S = 30.0
"""How long a replica has to answer its health check."""


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no replica answered at {url}")


REFUSED_BOUND_MS = "50"
"""The ingest lag bound of a ``--refused`` run (the default of ``meterline serve``)."""


def _post_all(url: str, token: str, bodies: list[bytes], answers: tuple[int, ...] = (202,)) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(share: list[bytes]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for body in share:
                response = client.post("/v1/events", content=body)
                if response.status_code not in answers:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    threads = [
        threading.Thread(target=send, args=(bodies[number::CONNECTIONS],))
        for number in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _one_run(
    source: str,
    nats_url: str,
    namespace: str,
    schemas: Schemas,
    bodies: list[bytes],
    log: Path,
    refused: bool = False,
) -> dict[str, float]:
    _, location = schemas.create()
    token = prepare_ledger(location, 2)
    port = free_port()
    command = [sys.executable, "-m", "meterline", "serve", "--db", location, "--port", str(port)]
    # no worker decides anything here: the ingest lag bound is off, or it would refuse
    bound = REFUSED_BOUND_MS if refused else "0"
    command += ["--stream", nats_url, "--namespace", namespace, "--lag-max-ms", bound]
    with log.open("w") as output:
        replica = subprocess.Popen(
            command, env=dict(os.environ, PYTHONPATH=source), stdout=output, stderr=output
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url)
        _post_all(url, token, bodies[:1])  # warm: the first batch is not timed
        if refused:
            time.sleep(2 * int(REFUSED_BOUND_MS) / 1000)  # its partitions lag from now on
        user_before, system_before = _cpu_seconds(replica.pid)
        _post_all(url, token, bodies[1:], (429,) if refused else (202,))
        user_after, system_after = _cpu_seconds(replica.pid)
    finally:
        replica.terminate()
        replica.wait(10)
    events = (len(bodies) - 1) * 1000
    return {
        "user_us": (user_after - user_before) / events * 1e6,
        "system_us": (system_after - system_before) / events * 1e6,
        "total_us": (user_after - user_before + system_after - system_before) / events * 1e6,
        "load_average_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sources", help="LABEL=SRC,LABEL=SRC: the replicas' source trees")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--refused", action="store_true", help="time refused batches (429)")
    arguments = parser.parse_args()
    sources = [entry.split("=", 1) for entry in arguments.sources.split(",")]
    root = Path(tempfile.mkdtemp(prefix="api-cpu-"))
    (root / "jetstream").mkdir()
    nats_port = free_port()
    store = str(root / "jetstream")
    nats = subprocess.Popen(
        [NATS_SERVER, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    schemas = Schemas(POSTGRES_URL)
    bodies = floor_bodies(arguments.events + 1000, 1000)
    totals: dict[str, list[float]] = {}
    try:
        time.sleep(1)
        for round_number in range(arguments.rounds):
            for label, source in sources:
                namespace = f"apicpu{label.lower()}{round_number}"
                log = root / f"api-{label}-{round_number}.log"
                nats_url = f"nats://127.0.0.1:{nats_port}"
                figures = _one_run(
                    source, nats_url, namespace, schemas, bodies, log, arguments.refused
                )
                totals.setdefault(label, []).append(figures["total_us"])
                shown = ", ".join(f"{name} {value:.2f}" for name, value in figures.items())
                print(f"round {round_number + 1} {label}: {shown}", flush=True)
    finally:
        nats.terminate()
        nats.wait(10)
        schemas.drop_all()
    for label, values in totals.items():
        listed = ", ".join(f"{value:.2f}" for value in values)
        print(f"{label}: median {statistics.median(values):.2f} µs/event ({listed})")


if __name__ == "__main__":
    main()
