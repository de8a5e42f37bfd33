"""Training loops: one host-side task loop per model driving a torch (eager) or JAX (jit) engine,
resumable checkpoints, and the lockstep driver used by the curve parity check (L5)."""
