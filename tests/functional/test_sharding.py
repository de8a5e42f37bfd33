"""Data-parallel JAX training over a 2-device CPU mesh gives the single-device losses."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, jax
from twinframe import registry
from twinframe.training.runner import Trainer
spec = registry.get("hrm")
tr = Trainer(spec, spec.config("tiny"), spec.run_config("tiny"), "jax")
mesh = tr.engine.mesh
losses = [tr.train_step()["loss"] for _ in range(3)]
spec = None if mesh is None else str(tr.engine.z_H.sharding.spec)
print(json.dumps({"devices": len(jax.devices()), "mesh": mesh is not None, "spec": spec,
                  "losses": losses}))
"""


def _run(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_device_mesh_matches_one_device():
    one, two = _run(1), _run(2)
    assert one["devices"] == 1 and not one["mesh"]
    assert two["devices"] == 2 and two["mesh"] and "data" in two["spec"]
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert abs(a - b) <= 1e-5 * abs(a)
