"""What a bench figure depends on: devices, library versions, thread settings, machine load;
device synchronisation and peak device memory for each framework (GPU: the allocator's peak;
CPU: none, the process's max RSS is reported instead)."""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import Any


def torch_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_sync(_: Any = None) -> None:
    """Wait for torch's device (CUDA); CPU ops are synchronous."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def jax_sync(out: Any) -> None:
    """Block until every array in `out` (any pytree) is computed."""
    import jax

    jax.block_until_ready(out)


def torch_reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def torch_peak() -> int | None:
    """Peak bytes allocated by torch on the GPU since the last reset; None on CPU."""
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def jax_peak() -> int | None:
    """Peak bytes in use on JAX's first device (None where the backend keeps no statistics,
    e.g. CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def max_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def load() -> dict[str, Any]:
    """1/5/15-minute load averages and the CPU count (the machine may be shared)."""
    la = os.getloadavg()
    return {"loadavg": [round(x, 2) for x in la], "cpus": os.cpu_count()}


def environment() -> dict[str, Any]:
    """Devices, versions and thread settings of this process."""
    import jax
    import jaxlib
    import numpy as np
    import torch

    dev = torch_device()
    out: dict[str, Any] = {
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_device_kind": jax.devices()[0].device_kind,
        "jax_backend": jax.default_backend(),
        "torch_device": str(dev),
        "torch_device_name": (torch.cuda.get_device_name(0) if dev.type == "cuda"
                              else platform.processor() or platform.machine()),
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jaxlib.__version__, "torch": torch.__version__,
                     "numpy": np.__version__,
                     "cuda": torch.version.cuda, "cudnn": (torch.backends.cudnn.version()
                                                          if dev.type == "cuda" else None)},
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "TWINFRAME_XLA_CPU", "TWINFRAME_JAX_CACHE")},
        "machine": platform.machine(), "cpu_model": _cpu_model(), "argv": sys.argv,
    }
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def device_label(env: dict[str, Any]) -> str:
    """One line naming the devices the figures were measured on."""
    if env["jax_backend"] == "cpu":
        cpu = env.get("cpu_model") or env["machine"]
        return f"CPU {cpu} ({env['torch_threads']} torch threads)"
    return f"{env['jax_device_kind']} (torch: {env['torch_device_name']})"
