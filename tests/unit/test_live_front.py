"""The live front (``meterline.live.front.LiveFront``): both mirrors a server may hold
answer every member the API and the dashboard ask of it (mypy checks the signatures
where ``api.services`` assigns them)."""

from __future__ import annotations

from pathlib import Path

from meterline.live.front import LiveFront
from meterline.live.link import LiveLink
from meterline.stream.mirror import AccessMirror

MEMBERS = (
    "lock", "listeners", "customers", "states", "store",
    "access", "snapshot", "figures", "status", "override",
)  # fmt: skip


def test_the_protocol_names_what_the_routes_and_pages_call() -> None:
    assert set(MEMBERS) <= set(dir(LiveFront))


def test_the_access_mirror_is_a_live_front(tmp_path: Path) -> None:
    mirror = AccessMirror(str(tmp_path / "ledger.db"))
    try:
        assert isinstance(mirror, LiveFront)
    finally:
        mirror.stop()


def test_the_live_link_is_a_live_front(tmp_path: Path) -> None:
    link = LiveLink(str(tmp_path / "ledger.db"))  # not started: no worker process
    try:
        assert isinstance(link, LiveFront)
    finally:
        link.stop()
