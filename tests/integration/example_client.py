"""docs/examples/amqp_agency_client.py, the integrators' example AMQP client, loaded once as a module:
the AMQP tests and bench/bench_e2e.py use it as the agencies' document systems would."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT

__all__ = ["CLIENT"]


def _load() -> ModuleType:
    name = "amqp_agency_client"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / "amqp_agency_client.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CLIENT = _load()
