"""The relay's names where they were before it was split by role (issue 11): kept for the imports
that still name this module (``adapters/http/metrics.py``, ``tests/unit/test_axis_client.py``), until
they import from :mod:`adapters.national_axis`. Nothing is defined here.

The relay is :mod:`~adapters.national_axis.relay_out`, :mod:`~adapters.national_axis.relay_in`,
:mod:`~adapters.national_axis.reconciler`, :mod:`~adapters.national_axis.breaker` and
:mod:`~adapters.national_axis.link`.
"""

from adapters.national_axis.breaker import CircuitBreaker, CircuitState
from adapters.national_axis.link import AxisLink
from adapters.national_axis.reconciler import Reconciler
from adapters.national_axis.relay_in import RelayIn
from adapters.national_axis.relay_out import RelayOut

__all__ = ["AxisLink", "CircuitBreaker", "CircuitState", "Reconciler", "RelayIn", "RelayOut"]
