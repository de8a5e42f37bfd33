"""Checkpoint conversion both ways and torch-vs-JAX parity checks, reports."""
