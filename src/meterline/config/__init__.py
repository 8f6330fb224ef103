"""Declarative pricing: YAML files -> configuration revisions, their diff and simulation."""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = [
    "ConfigurationError",
    "parse_configuration",
    "read_yaml",
]

_HOMES = {
    "ConfigurationError": "meterline.config.source",
    "parse_configuration": "meterline.config.schema",
    "read_yaml": "meterline.config.source",
}
"""Where each public name lives; loaded on first use (PEP 562), so importing one light
module of this package does not load the rest."""

__getattr__ = lazy_exports("meterline.config", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.config.schema import parse_configuration
    from meterline.config.source import ConfigurationError, read_yaml
