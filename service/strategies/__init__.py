"""The strategy registry: (tool type, format) → Strategy.

Each module listed in MODULES exposes `STRATEGIES: list[Strategy]`; adding a tool type or
format means one new module and one line here. Extra modules (plugins, test-only
strategies) are named by the caller, never switched on inside production code.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module

from service.steps import Strategy

__all__ = ["FORMATS", "MODULES", "Registry", "load_registry"]

FORMATS = ("package", "bundle", "csv", "xlsx", "pdf")
MODULES = (
    "service.strategies.bundle",
    "service.strategies.forms",
    "service.strategies.workflows",
    "service.strategies.themes",
    "service.strategies.records",
)

Registry = dict[tuple[str, str], Strategy]


def load_registry(extra_modules: Iterable[str] = ()) -> Registry:
    """Import the strategy modules and index their strategies by (tool type, format)."""
    registry: Registry = {}
    for name in (*MODULES, *extra_modules):
        for strategy in import_module(name).STRATEGIES:
            key = (strategy.tool_type, strategy.format)
            if key in registry:
                raise ValueError(f"two strategies for {key}: {registry[key].name}, {strategy.name}")
            registry[key] = strategy
    return registry
