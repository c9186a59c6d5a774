"""The national axis (VDXP): its wire format (``protocol``), an async client (``client``), and the link
of a province's axis to it: relay out (``relay_out``), relay in (``relay_in``), the reconciler
(``reconciler``), the circuit breaker (``breaker``), all started together as an ``AxisLink`` (``link``).

The mock axis that integrators test against is its own package, :mod:`mock_axis`."""

from adapters.national_axis.breaker import CircuitBreaker, CircuitState
from adapters.national_axis.client import NationalAxisClient
from adapters.national_axis.link import AxisLink
from adapters.national_axis.reconciler import Reconciler
from adapters.national_axis.relay_in import RelayIn
from adapters.national_axis.relay_out import RelayOut

__all__ = [
    "AxisLink",
    "CircuitBreaker",
    "CircuitState",
    "NationalAxisClient",
    "Reconciler",
    "RelayIn",
    "RelayOut",
]
