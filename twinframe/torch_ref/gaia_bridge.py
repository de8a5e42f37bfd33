"""Bridges of the user's guide between the NumPy v4.x reference and the torch v3.1 layer:
weight transfer both ways (guide §3.1, §3.2, §4.1, §6) and the guide §5.1 hybrid level (a
v4.x `HierarchicalLevel` whose core is a `DiagnosticPlasticLinear`, through a NumPy adapter
that `HierarchyManager` accepts). The JAX hybrid is `functional.gaia_v4` with a "plastic"
`LayerSpec`.

Both systems store weights (out, in): the transfer copies without transposing and checks
shapes (the guide's `.T` would make an (in, out) weight). torch -> NumPy is exact (float32 ->
float64); NumPy -> torch rounds to float32. The v3.1 traces have no v4.x counterpart (a
HebbianCore's pre/post are the last batch means): moving a layer to v4.x keeps its weight (or,
with effective=True, the weight its forward uses); moving to v3.1 starts the traces at zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from twinframe.models import gaia_bridge as mb
from twinframe.models.gaia import GaiaConfig
from twinframe.torch_ref import gaia as tg
from twinframe.torch_ref import gaia_v4 as tv


@torch.no_grad()
def hebbian_to_plastic(core: tv.HebbianCore, layer: tg.DiagnosticPlasticLinear | None = None,
                       cfg: GaiaConfig | None = None) -> tg.DiagnosticPlasticLinear:
    """HebbianCore -> DiagnosticPlasticLinear (a new one from `cfg` unless `layer` is given):
    weight copied (shape checked), traces, histories and counter zeroed."""
    out_in = (core.output_size, core.input_size)
    if layer is None:
        layer = tg.DiagnosticPlasticLinear(core.input_size, core.output_size,
                                           cfg or GaiaConfig())
    w = mb.hebbian_to_plastic_weight(core.weights, (layer.out_features, layer.in_features))
    if out_in != w.shape:
        raise ValueError(f"HebbianCore ({out_in}) and layer ({w.shape}) disagree")
    layer.weight.copy_(torch.from_numpy(w))
    for b in layer.buffers():
        b.zero_()
    return layer


def plastic_to_hebbian(layer: tg.DiagnosticPlasticLinear, core: tv.HebbianCore | None = None,
                       rule: str = "hebbian", effective: bool = False) -> tv.HebbianCore:
    """DiagnosticPlasticLinear -> HebbianCore (a new one with `rule` unless `core` is given):
    weights = the layer's raw weight (or its effective weight), pre/post and history reset."""
    out_in = (layer.out_features, layer.in_features)
    w = mb.plastic_to_hebbian_weight(layer.weight.detach().numpy(), out_in,
                                     layer.fast_trace.numpy(), layer.slow_trace.numpy(),
                                     effective)
    if core is None:
        core = tv.HebbianCore(layer.in_features, layer.out_features, rule, weights=w)
    else:
        if (core.output_size, core.input_size) != out_in:
            raise ValueError(f"HebbianCore {(core.output_size, core.input_size)} != layer "
                             f"{out_in}")
        core.weights = w
    core.reset_state()
    return core


class PlasticLayerAdapter:
    """A NumPy-facing layer around a torch `DiagnosticPlasticLinear` (guide §5.1): forward takes
    and returns float64 NumPy arrays (computed in float32); the traces update as in v3.1."""

    def __init__(self, layer: tg.DiagnosticPlasticLinear) -> None:
        self.layer = layer
        self.input_size, self.output_size = layer.in_features, layer.out_features
        self.hparams: dict[str, Any] = {}

    def forward(self, x: Any) -> np.ndarray:
        x = np.asarray(x, np.float32)
        x = x[None] if x.ndim == 1 else x
        with torch.no_grad():
            y = self.layer(torch.from_numpy(x))
        return y.numpy().astype(np.float64)

    def update(self, lr: float | None = None) -> None:
        del lr

    def reset_state(self) -> None:
        pass


def hybrid_level(level_id: int, input_size: int, output_size: int, cfg: GaiaConfig,
                 weight: np.ndarray, temporal_resolution: int = 1) -> tv.HierarchicalLevel:
    """A v4.x level whose only layer is a plastic v3.1 layer with the given (out, in) weight."""
    layer = tg.DiagnosticPlasticLinear(input_size, output_size, cfg)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(mb.hebbian_to_plastic_weight(
            weight, (output_size, input_size))))
        for b in layer.buffers():
            b.zero_()
    lv = tv.HierarchicalLevel(level_id, input_size, output_size, temporal_resolution)
    lv.add_layer(PlasticLayerAdapter(layer))
    return lv
