"""The national axis (VDXP): its wire format, an async client, and the relay out and in.

The mock axis that integrators test against is its own package, :mod:`mock_axis`."""
