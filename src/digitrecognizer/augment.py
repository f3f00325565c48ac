"""Augmentation: random distortions that mimic how people draw, applied to whole batches as tensors (torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Random distortions that mimic how people draw; all are applied on whole batches as tensors."""

    rotate_deg: float = 12.0
    scale: float = 0.15  # zoom factor drawn from [1 - scale, 1 + scale]
    aspect: float = 0.10  # independent x/y stretch
    shear: float = 0.25  # slant, as tan(angle)
    shift_px: float = 2.5
    elastic_px: float = 0.9  # std of a smooth displacement field (pixels)
    stroke: float = 0.6  # strength of random thickening (thinning is capped at half: thin strokes vanish)
    # Share of images re-drawn with crisp edges, as a canvas brush and our preprocessing produce them
    # (MNIST's own edges are soft scanner blur).
    crisp: float = 0.5
    # Share of images whose ink box is stretched towards a square (half to all the way): scanned forms and tablets
    # that normalise each digit to fill its box make a 1 a thick bar or a wide diagonal, a 7 as wide as it is tall.
    square: float = 0.0
    square_labels: list[int] | None = None  # stretch only examples of these labels (None: all of them)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "square_labels")  # a filter, not a distortion


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """x: (B, 1, 28, 28) in [0, 1], white ink on black. One affine+elastic resampling, then stroke width."""
    return apply_distortions(x, draw_distortions(x.shape[0], cfg, g))


@dataclass
class Distortions:
    """The random part of `augment_batch`, one row per image. Drawn for a whole batch and then sliced, it lets each
    training process distort only its share of the batch, exactly as one process distorts the whole batch."""

    theta: torch.Tensor  # (B, 2, 3) affine map from output to input coordinates
    elastic: torch.Tensor | None  # (B, 2, 5, 5) coarse displacement field, in affine_grid units
    stroke: torch.Tensor | None  # (B, 1, 1, 1) pen-width change: > 0 thicker, < 0 thinner
    crisp_level: torch.Tensor | None  # (B, 1, 1, 1) cut level of the crisp re-drawing; NaN keeps the soft edge
    square: torch.Tensor | None = None  # (B,) how far the ink box is stretched towards a square, 0 to 1

    def __getitem__(self, rows: slice) -> "Distortions":
        return Distortions(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                              for f in fields(self)})


def draw_distortions(b: int, cfg: AugmentConfig, g: torch.Generator) -> Distortions:
    # The order of the draws is part of the recipe: changing it changes every seeded run.
    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(b, *shape, generator=g) * (hi - lo) + lo

    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    zoom = uniform(1 - cfg.scale, 1 + cfg.scale)
    stretch = uniform(1 - cfg.aspect, 1 + cfg.aspect)
    shear = uniform(-cfg.shear, cfg.shear)
    shift = uniform(-cfg.shift_px, cfg.shift_px, 2) / 14.0  # affine_grid works in [-1, 1] = 28 px
    cos, sin = torch.cos(angle), torch.sin(angle)
    # The grid maps output to input coordinates, so dividing by zoom makes the digit larger for zoom > 1.
    sx, sy = 1 / (zoom * stretch), stretch / zoom
    theta = torch.stack(
        [
            torch.stack([cos * sx, -sin * sx + shear * sx, shift[:, 0]], dim=1),
            torch.stack([sin * sy, cos * sy, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    elastic = torch.randn(b, 2, 5, 5, generator=g) * (cfg.elastic_px / 14.0) if cfg.elastic_px else None
    stroke = uniform(-cfg.stroke, cfg.stroke).view(b, 1, 1, 1) if cfg.stroke else None
    crisp_level = None
    if cfg.crisp:
        chosen = torch.rand(b, generator=g) < cfg.crisp
        crisp_level = torch.full((b, 1, 1, 1), math.nan)
        if chosen.any():
            crisp_level[chosen] = torch.rand(int(chosen.sum()), 1, 1, 1, generator=g) * 0.4 + 0.25
    square = None
    if cfg.square:  # drawn last, so recipes without it keep every other draw
        chosen = torch.rand(b, generator=g) < cfg.square
        square = torch.where(chosen, torch.rand(b, generator=g) * 0.5 + 0.5, torch.zeros(b))
    return Distortions(theta, elastic, stroke, crisp_level, square)


def apply_distortions(x: torch.Tensor, d: Distortions) -> torch.Tensor:
    if d.square is not None and bool((d.square > 0).any()):
        x = stretch_to_square(x, d.square)  # first: the collections stretched the digit before anyone wrote it
    grid = F.affine_grid(d.theta, list(x.shape), align_corners=False)
    if d.elastic is not None:
        # A coarse random field upsampled to 28x28 gives smooth, local wobble like an unsteady hand.
        field_ = F.interpolate(d.elastic, size=(28, 28), mode="bicubic", align_corners=True)
        grid = grid + field_.permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if d.stroke is not None:
        # Blend towards a 3x3 max (thicker) or min (thinner) filter: a continuous pen-width change.
        thick = F.max_pool2d(out, 3, stride=1, padding=1)
        thin = -F.max_pool2d(-out, 3, stride=1, padding=1)
        out = torch.where(d.stroke > 0, out + d.stroke * (thick - out), out + 0.5 * d.stroke.abs() * (thin - out))
    if d.crisp_level is not None:
        out = crisp_strokes(out, d.crisp_level)
    return out.clamp_(0, 1)


def stretch_to_square(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Stretch each image's ink box along its shorter side, `amount` of the way to a square (0 leaves the image as
    it is), and centre the box."""
    first_x, last_x = _ink_extent(x.amax(dim=2).squeeze(1))
    first_y, last_y = _ink_extent(x.amax(dim=3).squeeze(1))
    w, h = last_x - first_x + 1, last_y - first_y + 1
    side = torch.maximum(w, h)
    sx = (w + amount * (side - w)) / w  # output size over input size, >= 1
    sy = (h + amount * (side - h)) / h
    cx, cy = (first_x + last_x + 1) / 28 - 1, (first_y + last_y + 1) / 28 - 1  # box centre, affine_grid units
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([1 / sx, zero, cx], 1), torch.stack([zero, 1 / sy, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    stretched = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where((amount > 0).view(-1, 1, 1, 1), stretched, x)


def _ink_extent(profile: torch.Tensor, level: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index (float) where each row of `profile` (B, 28) reaches `level`; a blank row gives the
    whole width, so a blank image is left as it is."""
    inked = profile >= level
    index = torch.arange(profile.shape[1], dtype=profile.dtype)
    first = torch.where(inked, index, torch.inf).amin(1)
    last = torch.where(inked, index, -torch.inf).amax(1)
    blank = ~inked.any(1)
    return torch.where(blank, 0.0, first), torch.where(blank, profile.shape[1] - 1.0, last)


def crisp_strokes(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Re-draw the images with a level the way the app sees drawings: upsample 4x, cut at the level (a hard brush
    edge; the level also thins or thickens the stroke), and average back down to 28x28."""
    chosen = ~level.view(-1).isnan()
    if not chosen.any():
        return x
    up = F.interpolate(x[chosen], scale_factor=4, mode="bilinear", align_corners=False)
    crisp = ((up - level[chosen]) / 0.08).clamp_(0, 1)
    out = x.clone()
    out[chosen] = F.avg_pool2d(crisp, 4)
    return out
