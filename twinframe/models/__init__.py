"""Framework-neutral model definitions: configs, canonical NumPy init, parameter shapes.

Both `torch_ref` and `functional` import from here; this package imports neither torch nor jax.
"""
