"""The national axis (VDXP): its wire format, an async client, and a mock axis to test against."""
