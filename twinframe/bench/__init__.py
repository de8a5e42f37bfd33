"""`twinframe bench`: side-by-side speed of a model's torch and JAX training, in one process.

Modules: `timing` (variants, interleaved rounds, medians, device sync), `variants` (torch eager,
torch.compile, JAX jit; train step alone and the end-to-end trainer step), `matmul` (the
matmul rate measured in the same rounds), `env` (device, versions, memory, load), `core`
(`bench`: the run and its JSON-able result), `table` (the stdout table).
"""

from twinframe.bench import table
from twinframe.bench.core import BenchOptions, bench

__all__ = ["BenchOptions", "bench", "table"]
