"""One error tree: every public exception class meterline defines derives from
``MeterlineError`` and carries its answer's code and HTTP status, so ``except
MeterlineError`` catches whatever meterline raises on purpose."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import meterline
from meterline.billing.service import InvalidRequest, NotFound
from meterline.config.source import ConfigurationError
from meterline.core.money import MoneyError
from meterline.errors import MeterlineError
from meterline.live.webhook_service import WebhookNotFound


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(meterline.__path__, "meterline.")
        if not info.name.endswith("__main__")
    )


STANDALONE = {"meterline.proofs.ProofError"}
"""The standalone proof verifier imports only two pure core modules (tested in
test_proofs.py), so its error stays a plain ValueError."""


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, BaseException)
                and value.__module__ == name
                and not value.__name__.startswith("_")
                and f"{name}.{value.__qualname__}" not in STANDALONE
            ):
                found.append(value)
    return found


def test_the_walk_finds_the_errors_of_every_room() -> None:
    names = {error.__name__ for error in _exception_classes()}
    assert {"ConfigurationError", "BillingError", "StreamUnavailable", "LeaseLost"} <= names
    assert len(names) >= 30


@pytest.mark.parametrize("error", _exception_classes(), ids=lambda error: error.__qualname__)
def test_every_public_error_derives_from_the_root_with_a_code_and_status(
    error: type[BaseException],
) -> None:
    assert issubclass(error, MeterlineError), f"{error.__module__}.{error.__qualname__}"
    assert isinstance(error.code, str) and error.code
    assert isinstance(error.http_status, int) and 400 <= error.http_status <= 599


def test_errors_that_were_builtin_kinds_still_are() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(MoneyError, ValueError)
    assert issubclass(WebhookNotFound, LookupError)


def test_specific_errors_keep_their_own_answer() -> None:
    assert (NotFound.code, NotFound.http_status) == ("not_found", 404)
    assert (InvalidRequest.code, InvalidRequest.http_status) == ("invalid_input", 422)
