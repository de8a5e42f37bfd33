"""JAX's persistent compilation cache for twinframe's CLI and tests.

Compiled XLA executables are kept in `$TWINFRAME_JAX_CACHE` (default
`$XDG_CACHE_HOME/twinframe/jax`, i.e. `~/.cache/twinframe/jax`), so a second `twinframe report`
or test run skips the compiles of the first. Clear it with `rm -rf ~/.cache/twinframe/jax`;
set `TWINFRAME_JAX_CACHE=off` to disable it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """Where compiled executables are kept, or None when disabled."""
    env = os.environ.get("TWINFRAME_JAX_CACHE")
    if env is not None:
        return None if env.lower() in ("", "0", "off", "none") else Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "twinframe" / "jax"


def enable() -> Path | None:
    """Turn the cache on for this process (every compile that takes >= 0.5 s is stored)."""
    import jax

    d = cache_dir()
    if d is None:
        return None
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("JAX compilation cache disabled: %s", e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return d
