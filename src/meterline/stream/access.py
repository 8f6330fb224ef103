"""Per-customer access documents in a JetStream KV bucket, mirrored locally (async).

Owns the way access answers reach every API replica: whoever decides (a worker's
controls) ``put``s a customer's document; every ``AccessBoard`` follows the bucket with a
watcher and keeps ``mirror`` (customer -> document) current, initial values included, so
a replica answers access from a local dict. Documents are canonical JSON (decimals kept
exactly, see ``core.events``).

Key encoding: a KV key allows only ``[-/_=.A-Za-z0-9]`` with ``.`` as a token separator,
so a customer id is escaped: ASCII letters, digits, ``-`` and ``_`` stay as they are and
every other character becomes ``=XX`` per UTF-8 byte (uppercase hex), so ``acme`` is
``acme`` and ``acme.eu`` is ``acme=2Eeu``. The escaping is a bijection: ``key_customer``
refuses any key ``customer_key`` does not produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import string
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from meterline.core.events import decode_exact, encode_canonical
from meterline.stream.errors import StreamUnavailable
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import ensure_access_bucket

READY_TIMEOUT_S = 10.0
"""Seconds ``open`` waits for the bucket's initial values before giving up."""

API_TIMEOUT_S = 5.0
"""Seconds one KV request (put, delete) may take."""

WATCH_RETRY_S = 1.0
"""Seconds before a failed watcher is started again."""

_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
_KEY = re.compile(r"(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+")
_ESCAPED = re.compile(r"=([0-9A-F]{2})")

ChangeCallback = Callable[[str, "dict[str, Any] | None"], None]
"""Called with a customer and its new document (None when deleted) on every change."""

_log = logging.getLogger(__name__)


def customer_key(customer: str) -> str:
    """The KV key of ``customer`` (see the module docstring for the escaping)."""
    if type(customer) is not str or not customer:
        raise ValueError(f"customer must be a non-empty string, got {customer!r}")
    parts: list[str] = []
    for character in customer:
        if character in _SAFE:
            parts.append(character)
        else:
            encoded = character.encode("utf-8", "surrogatepass")
            parts.extend(f"={byte:02X}" for byte in encoded)
    return "".join(parts)


def key_customer(key: str) -> str:
    """The customer whose key is ``key``; ValueError if ``customer_key`` never makes it."""
    if _KEY.fullmatch(key) is None:
        raise ValueError(f"{key!r} is not an escaped customer key")
    data = bytearray()
    position = 0
    for match in _ESCAPED.finditer(key):
        data += key[position : match.start()].encode()
        data.append(int(match.group(1), 16))
        position = match.end()
    data += key[position:].encode()
    try:
        customer = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise ValueError(f"{key!r} does not escape valid UTF-8") from None
    if customer_key(customer) != key:
        raise ValueError(f"{key!r} is not the canonical key of {customer!r}")
    return customer


class AccessBoard:
    """Puts access documents into the bucket and mirrors every document of it locally."""

    def __init__(self, key_value: KeyValue) -> None:
        self.key_value = key_value
        self.mirror: dict[str, dict[str, Any]] = {}
        """customer -> latest document; updated in place, read it, never write it."""
        self._listeners: list[ChangeCallback] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    @classmethod
    async def open(
        cls, connection: Client, settings: StreamSettings, ready_timeout_s: float = READY_TIMEOUT_S
    ) -> AccessBoard:
        """A board on the access bucket of ``settings`` (created if missing), its mirror
        loaded with the bucket's current documents. Raises ``StreamUnavailable`` if the
        bucket cannot be reached or loaded within ``ready_timeout_s``."""
        js = connection.jetstream(timeout=API_TIMEOUT_S)
        try:
            key_value = await asyncio.wait_for(ensure_access_bucket(js, settings), ready_timeout_s)
        except (TimeoutError, nats.errors.Error) as error:
            raise StreamUnavailable(
                f"cannot open access bucket {settings.access_bucket}: {error!r}"
            ) from error
        board = cls(key_value)
        board.start()
        try:
            await board.wait_ready(ready_timeout_s)
        except BaseException:
            await board.close()
            raise
        return board

    def start(self) -> None:
        """Start following the bucket in the background; idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="meterline-access-board")

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the mirror holds the bucket's initial documents."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise StreamUnavailable(f"access bucket not loaded within {timeout_s} s") from None

    def watch(self, on_change: ChangeCallback) -> None:
        """Call ``on_change(customer, document or None)`` on every later change."""
        self._listeners.append(on_change)

    def get(self, customer: str) -> dict[str, Any] | None:
        """The mirrored document of ``customer``, None when it has none."""
        return self.mirror.get(customer)

    async def put(self, customer: str, document: dict[str, Any]) -> int:
        """Store ``document`` as ``customer``'s; its revision in the bucket."""
        if type(document) is not dict:
            raise TypeError(f"document must be a dict, got {type(document).__name__}")
        try:
            return await self.key_value.put(customer_key(customer), encode_canonical(document))
        except (TimeoutError, nats.errors.Error) as error:
            raise StreamUnavailable(f"access put for {customer!r} failed: {error!r}") from error

    async def delete(self, customer: str) -> None:
        """Remove ``customer``'s document."""
        try:
            await self.key_value.delete(customer_key(customer))
        except (TimeoutError, nats.errors.Error) as error:
            raise StreamUnavailable(f"access delete for {customer!r} failed: {error!r}") from error

    async def close(self) -> None:
        """Stop following the bucket (the connection stays open)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_watcher()

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _follow(self) -> None:
        """Watch the bucket forever: load a snapshot, then apply every change."""
        while True:
            try:
                self._watcher = await self.key_value.watchall()
                snapshot: dict[str, dict[str, Any]] | None = {}
                async for entry in self._watcher:
                    if entry is None:  # the watcher's marker: initial values delivered
                        if snapshot is not None:
                            self._replace(snapshot)
                            snapshot = None
                            self._ready.set()
                        continue
                    change = self._decode(entry)
                    if change is None:
                        continue
                    customer, document = change
                    if snapshot is None:
                        self._apply(customer, document)
                    elif document is None:
                        snapshot.pop(customer, None)
                    else:
                        snapshot[customer] = document
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("access watcher failed; restarting", extra={"error": repr(error)})
            await self._stop_watcher()
            await asyncio.sleep(WATCH_RETRY_S)

    @staticmethod
    def _decode(entry: KeyValue.Entry) -> tuple[str, dict[str, Any] | None] | None:
        """The customer and document of a watched entry (None document: deleted)."""
        try:
            customer = key_customer(entry.key)
        except ValueError:
            _log.warning("ignoring a key that is not a customer key", extra={"key": entry.key})
            return None
        if entry.operation in (KV_DEL, KV_PURGE):
            return customer, None
        try:
            document = decode_exact(entry.value or b"")
        except Exception:
            document = None
        if type(document) is not dict:
            _log.warning(
                "ignoring an access document that is not a JSON object", extra={"key": entry.key}
            )
            return None
        return customer, document

    def _apply(self, customer: str, document: dict[str, Any] | None) -> None:
        if document is None:
            if self.mirror.pop(customer, None) is None:
                return
        else:
            self.mirror[customer] = document
        self._tell(customer, document)

    def _replace(self, snapshot: dict[str, dict[str, Any]]) -> None:
        """Make the mirror equal ``snapshot``, telling listeners what changed."""
        changed = [
            customer
            for customer in self.mirror.keys() | snapshot.keys()
            if self.mirror.get(customer) != snapshot.get(customer)
        ]
        self.mirror.clear()
        self.mirror.update(snapshot)
        for customer in changed:
            self._tell(customer, snapshot.get(customer))

    def _tell(self, customer: str, document: dict[str, Any] | None) -> None:
        for listener in self._listeners:
            try:
                listener(customer, document)
            except Exception:
                _log.exception("access listener failed", extra={"customer": customer})
