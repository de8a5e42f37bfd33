"""Test-session setup shared by every test: JAX's persistent compilation cache (compiled steps
are reused across test processes and runs; see `twinframe.jax_cache`)."""

from twinframe import jax_cache

jax_cache.enable()
