"""twinframe: PyTorch <-> JAX model twins with checkpoint conversion and parity proofs."""

__version__ = "0.1.0"
