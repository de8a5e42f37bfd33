"""Pure-function JAX versions: params/state are pytrees, every step a pure jit-able function."""
