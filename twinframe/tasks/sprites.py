"""Synthetic "moving sprites with actions" (aime.md §5.1): one NumPy generator shared by both
frameworks. Sample n of split s with seed sigma comes from its own stream
`Generator(PCG64(SeedSequence([sigma, s, n])))`; the training batch at global step i is samples
i*B .. i*B+B-1 of split 0 (an endless stream); evaluation uses split 1.

Frames are uint8 [T, 3, W, W] (channel first); the model sees x = 2*frames/255 - 1. Action a_t
acts on the transition t -> t+1 (our choice, aime.md §5.1 / §10.12).
"""

from __future__ import annotations

import math

import numpy as np

NUM_SPRITES = 3
BACKGROUND = 0.15


def _stream(seed: int, split: int, n: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split, n])))


def render(size: int, pos: np.ndarray, radii: np.ndarray, colours: np.ndarray, bg: float
           ) -> np.ndarray:
    """One frame: [3, W, W] uint8 (float64 compositing, round half to even)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((3, size, size), bg, np.float64)
    for i in range(len(radii)):
        d = np.sqrt((x - pos[i, 0]) ** 2 + (y - pos[i, 1]) ** 2)
        cov = np.clip(radii[i] + 0.5 - d, 0.0, 1.0)
        img = img * (1.0 - cov) + colours[i][:, None, None] * cov
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def sample(seed: int, split: int, n: int, size: int, steps: int, action_dim: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """-> frames [T, 3, W, W] uint8, actions [T, A] float64 (aime.md §5.1, draws in order)."""
    rng = _stream(seed, split, n)
    W = size
    radii = np.array([W / 8, W / 10, W / 10], np.float64)
    colours = rng.uniform(0.3, 1.0, (NUM_SPRITES, 3))
    pos = np.stack([rng.uniform(radii[i], W - 1 - radii[i], 2) for i in range(NUM_SPRITES)])
    vel = np.zeros((NUM_SPRITES, 2), np.float64)
    for i in (1, 2):
        speed = rng.uniform(0.5, 1.5) * W / 32
        angle = rng.uniform(0.0, 2 * math.pi)
        vel[i] = speed * np.array([math.cos(angle), math.sin(angle)])
    a = rng.uniform(-1.0, 1.0, action_dim)
    bg = BACKGROUND
    frames = np.zeros((steps, 3, W, W), np.uint8)
    actions = np.zeros((steps, action_dim), np.float64)
    for t in range(steps):
        frames[t] = render(W, pos, radii, colours, bg)
        actions[t] = a
        if t == steps - 1:
            break
        vel[0] = 0.85 * vel[0] + 0.5 * (W / 32) * a[0:2]
        if action_dim > 2:
            bg = BACKGROUND + 0.1 * math.tanh(float(np.mean(a[2:])))
        pos = pos + vel
        lo, hi = radii, W - 1 - radii
        for i in range(NUM_SPRITES):
            for c in range(2):
                if pos[i, c] < lo[i]:
                    pos[i, c], vel[i, c] = 2 * lo[i] - pos[i, c], -vel[i, c]
                elif pos[i, c] > hi[i]:
                    pos[i, c], vel[i, c] = 2 * hi[i] - pos[i, c], -vel[i, c]
        a = np.clip(0.8 * a + 0.6 * rng.standard_normal(action_dim), -1.0, 1.0)
    return frames, actions


def batch(seed: int, index: int, batch_size: int, size: int, steps: int, action_dim: int,
          split: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Batch `index` of a split: frames [B, T, 3, W, W] f32 in [0, 1], actions [B, T, A] f32."""
    out = [sample(seed, split, index * batch_size + b, size, steps, action_dim)
           for b in range(batch_size)]
    frames = np.stack([f for f, _ in out]).astype(np.float32) / np.float32(255.0)
    actions = np.stack([a for _, a in out]).astype(np.float32)
    return frames, actions


def model_input(frames: np.ndarray) -> np.ndarray:
    """x = 2*frames - 1 in [-1, 1] (float32)."""
    return (np.float32(2.0) * frames - np.float32(1.0)).astype(np.float32)
