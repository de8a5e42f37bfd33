"""AIME-core configs (aime.md §1): the model config (architecture and everything the modules
consume) and the run config (optimiser, schedules, loss weights, RGB, data), plus presets.

Choices (aime.md §10 and the issue note):
- Loss weights, schedules and RGB settings are run settings: the host evaluates beta and the loss
  weights every step and passes them to the step as data; the optimiser (RGB + clip + AdamW with
  the reference's parameter groups) is built from the run config.
- Options that no engine implements are refused by `check_trainable` (one line): dropout > 0
  (dropout masks are not plumbed through the steps yet; parity runs use 0 anyway, aime.md §4),
  the adversarial branch, LPIPS, and the EMA `apply_shadow` aliasing bug.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twinframe.errors import ConfigError
from twinframe.models.base import FrozenConfig

TUPLE_FIELDS = ("enc_channels", "enc_layers_per_block", "dec_channels", "dec_layers_per_block",
                "num_layers_per_resolution")

# Hard-coded constants of the attention schema (aime.md §1: kept in every config).
SLOT_DIM = 64          # d
NUM_SLOTS = 4          # Ks
FPN_CHANNELS = (32, 48)
CONVGRU_CHANNELS = 32
PRIOR_HEADS = 4
MOTION_KERNELS = 8
FOURIER_BANDS = 32
MDL_MIXTURES = 10


@dataclasses.dataclass(frozen=True)
class AIMEConfig(FrozenConfig):
    """AIME-core architecture (aime.md §1). Defaults are the `tiny` preset."""

    image_size: int = 32
    sequence_length: int = 4
    action_dim: int = 4
    latent_dim: int = 8
    hidden_dim: int = 16
    context_dim: int = 32
    max_components: int = 6
    attention_resolution: int = 8
    lstm_layers: int = 3
    attention_dim: int = 20  # stored, unused (as in the reference)
    context_window: int = 4
    perceiver_latents: int = 16
    perceiver_heads: int = 2
    perceiver_layers: int = 1
    num_codes: int = 32
    code_dim: int = 16
    num_quantizers: int = 1
    perceiver_downsample: int = 2
    perceiver_base_channels: int = 8
    enc_channels: tuple[int, ...] = (16, 16, 32, 32)
    enc_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    dec_channels: tuple[int, ...] = (32, 32, 16, 16)
    dec_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    num_layers_per_resolution: tuple[int, ...] = (1, 1, 1, 1)
    nvae_stem_channels: int = 16
    nvae_downsample: int = 4
    prior_alpha: float = 6.0
    prior_beta: float = 2.0
    dkl_taylor_order: int = 10
    mc_samples: int = 10
    alpha_samples: int = 10
    gamma_trials: int = 16  # Marsaglia-Tsang proposals per gamma draw (our choice, see noise.py)
    dropout: float = 0.0
    posterior_dropout: float = 0.0
    phi_dropout: float = 0.0
    attention_prior_dropout: float = 0.0
    vq_decay: float = 0.8
    vq_commitment_weight: float = 0.05
    vq_diversity_weight: float = 0.005
    vq_dist_grad_codebook: str = "forward"
    train_lazy_perceiver_projs: bool = False
    perceiver_perceptual: str = "mse"
    adversarial: bool = False
    ema_alias_bug: bool = False

    def __post_init__(self) -> None:
        for name in TUPLE_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(int(x) for x in v))
        super().__post_init__()

    def validate(self) -> None:
        if self.image_size % (2 ** self.nvae_downsample):
            raise ConfigError("image_size must be divisible by 2**nvae_downsample")
        if self.image_size % self.attention_resolution:
            raise ConfigError("image_size must be a multiple of attention_resolution")
        if self.hidden_dim % 4 or self.hidden_dim % PRIOR_HEADS:
            raise ConfigError("hidden_dim must be divisible by 4 (4-head attention prior)")
        if self.context_dim % self.perceiver_heads:
            raise ConfigError("context_dim must be divisible by perceiver_heads")
        if self.perceiver_head_dim % 2:
            raise ConfigError("perceiver head dim must be even (RoPE)")
        if self.perceiver_downsample not in (2, 4, 8):
            raise ConfigError("perceiver_downsample must be 2, 4 or 8")
        if self.max_components < 2:
            raise ConfigError("max_components must be >= 2")
        n = sum(self.num_layers_per_resolution)
        for name in ("enc_channels", "enc_layers_per_block", "dec_channels",
                     "dec_layers_per_block"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{name} needs one entry per layer ({n})")
        if len(self.num_layers_per_resolution) < self.nvae_downsample:
            raise ConfigError("num_layers_per_resolution needs >= nvae_downsample resolutions")
        if self.vq_dist_grad_codebook not in ("forward", "step_end"):
            raise ConfigError("vq_dist_grad_codebook must be 'forward' or 'step_end'")
        if self.perceiver_perceptual not in ("mse", "none", "lpips"):
            raise ConfigError("perceiver_perceptual must be 'mse', 'none' or 'lpips'")
        if self.num_quantizers != 1:
            raise ConfigError("num_quantizers must be 1 (one VQ head, aime.md §2.2.2)")
        if self.sequence_length < 2:
            raise ConfigError("sequence_length must be >= 2")
        if self.context_window < self.context_frames:
            raise ConfigError("context_window must be >= min(context_window, T-1)")
        if self.token_frames_past < 1 or self.token_frames < 2:
            raise ConfigError(
                f"sequence_length {self.sequence_length} too short for perceiver_downsample "
                f"{self.perceiver_downsample} (aime.md §2.2.1: T >= 4 for ds 2, T >= 10 for ds 4)")
        for name in ("dropout", "posterior_dropout", "phi_dropout", "attention_prior_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must lie in [0, 1)")

    # -- derived sizes --------------------------------------------------------------------------

    @property
    def perceiver_head_dim(self) -> int:
        return self.context_dim // self.perceiver_heads

    @property
    def tokenizer_depth(self) -> int:
        return {2: 1, 4: 2, 8: 3}[self.perceiver_downsample]

    def token_time(self, T: int) -> int:
        """Time length after the tokenizer encoder (temporal Down3D first, then T-3 each)."""
        for i in range(self.tokenizer_depth):
            T = (T - 2) // 2 + 1 if i == 0 else T - 3
        return T

    @property
    def token_frames(self) -> int:
        """T' of the full clip."""
        return self.token_time(self.sequence_length)

    @property
    def context_frames(self) -> int:
        """T_ctx = max(1, min(W_ctx, T-1)) (aime.md §2.2.5)."""
        return max(1, min(self.context_window, self.sequence_length - 1))

    @property
    def token_frames_past(self) -> int:
        return self.token_time(self.context_frames)

    @property
    def token_grid(self) -> int:
        """Ht = Wt."""
        return self.image_size // self.perceiver_downsample

    @property
    def prior_input_dim(self) -> int:
        """Hp = Hd + Cc."""
        return self.hidden_dim + self.context_dim

    @property
    def lstm_input_dim(self) -> int:
        return self.latent_dim + self.context_dim + self.hidden_dim + self.action_dim

    @property
    def nvae_final_size(self) -> int:
        return self.image_size // (2 ** self.nvae_downsample)


@dataclasses.dataclass(frozen=True)
class AIMERun(FrozenConfig):
    """AIME-core run config (aime.md §1, §6): optimiser, schedules, loss weights, RGB, data."""

    seed: int = 0
    batch_size: int = 2
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    lr_constant_steps: int = 1000
    lr_t0: int = 1000
    lr_t_mult: int = 2
    lr_eta_min: float = 1e-7
    beta_min: float = 0.5
    beta_max: float = 1.0
    beta_epochs: int = 25
    steps_per_epoch: int = 5
    entropy_weight: float = 0.6
    lambda_recon: float = 1.0
    lambda_att_dyn: float = 0.95
    lambda_gram: float = 0.25
    label_smoothing: float = 0.05
    perceptual_weight: float = 0.9
    rgb_mu: float = 0.9
    rgb_lambda: float = 1.0
    rgb_steps: int = 1
    rgb_lr: float = 0.1
    rgb_interval: int = 2
    rgb_zero_adv_task: bool = False
    ema_decay: float = 0.995
    checkpoint_every: int = 250
    noise_source: str = "host"
    torch_threads: int = 1  # intra-op threads of the torch engine's steps (0: torch's setting)

    def validate(self) -> None:
        if not 0 <= self.seed < 2**32:
            raise ConfigError("seed must lie in [0, 2**32)")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.steps_per_epoch < 1:
            raise ConfigError("steps_per_epoch must be >= 1")
        if self.rgb_interval < 1 or self.rgb_steps < 0:
            raise ConfigError("rgb_interval must be >= 1 and rgb_steps >= 0")
        if self.noise_source not in ("host", "native"):
            raise ConfigError("noise_source must be 'host' or 'native'")
        if self.torch_threads < 0:
            raise ConfigError("torch_threads must be >= 0 (0: torch's own setting)")

    @property
    def num_tasks(self) -> int:
        return 4 if self.rgb_zero_adv_task else 3


def check_trainable(cfg: AIMEConfig, run: AIMERun) -> None:
    """Refuse (one line) what neither engine implements."""
    for name in ("dropout", "posterior_dropout", "phi_dropout", "attention_prior_dropout"):
        if getattr(cfg, name) > 0:
            raise ConfigError(f"{name} > 0 is not implemented (dropout masks are not plumbed "
                              "through the steps; parity runs use 0, aime.md §4)")
    if cfg.adversarial:
        raise ConfigError("adversarial=True (TemporalDiscriminator) is not implemented: not core")
    if cfg.perceiver_perceptual == "lpips":
        raise ConfigError("perceiver_perceptual='lpips' is not implemented (use 'mse' or 'none')")
    if cfg.ema_alias_bug:
        raise ConfigError("ema_alias_bug=True (the reference's apply_shadow aliasing) is not "
                          "implemented")
    if run.noise_source != "host":
        raise ConfigError("noise_source='native' is not implemented; use 'host'")


DEFAULT = AIMEConfig(
    image_size=64, sequence_length=10, action_dim=21, latent_dim=36, hidden_dim=32,
    context_dim=128, max_components=15, attention_resolution=16, context_window=10,
    perceiver_latents=128, perceiver_heads=8, perceiver_layers=4, num_codes=1024, code_dim=256,
    perceiver_downsample=4, perceiver_base_channels=64,
    enc_channels=(64, 64, 96, 128, 128, 192), enc_layers_per_block=(1, 1, 2, 1, 1, 1),
    dec_channels=(192, 128, 128, 96, 64, 64), dec_layers_per_block=(1, 1, 1, 2, 1, 1),
    num_layers_per_resolution=(1, 2, 2, 1), nvae_stem_channels=64, nvae_downsample=4,
)
TINY = AIMEConfig()
MICRO = AIMEConfig(
    image_size=16, latent_dim=4, hidden_dim=8, context_dim=16, max_components=4,
    attention_resolution=4, perceiver_latents=8, num_codes=16, code_dim=8,
    perceiver_base_channels=4, enc_channels=(8, 8, 16), enc_layers_per_block=(1, 1, 2),
    dec_channels=(16, 16, 8), dec_layers_per_block=(1, 1, 1), num_layers_per_resolution=(1, 2),
    nvae_stem_channels=8, nvae_downsample=2,
)
PRESETS: dict[str, tuple[AIMEConfig, AIMERun]] = {
    "default": (DEFAULT, AIMERun(batch_size=8, steps_per_epoch=1000)),
    "tiny": (TINY, AIMERun()),
    "micro": (MICRO, AIMERun()),
}


def config_dict(cfg: AIMEConfig) -> dict[str, Any]:
    return cfg.to_dict()
