"""A training run's state: network, optimiser, learning-rate schedule and weight average, built from a config,
started, or restored from a checkpoint (torch)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from . import checkpoint
from .recipes import TrainConfig
from .models import create_model, recompute_batch_norm

MIN_ONE_CYCLE_STEPS = 10


@dataclass
class Run:
    """Everything the loop mutates; saved whole in each checkpoint so --resume continues exactly."""

    config: TrainConfig
    model: torch.nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # > 0 only after an interruption mid-epoch
    history: list = field(default_factory=list)
    best_val_acc: float = -1.0
    train_seconds: float = 0.0
    command: str = ""
    # The weights validated and exported: the average's, with batch-norm statistics recomputed if the config says so
    # (then a copy, so that the average itself goes on exactly as it would without).
    evaluated: torch.nn.Module | None = None

    def state(self, rng: dict | None = None) -> dict:
        return {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "ema": self.eval_model().state_dict() if self.ema else None,
            "ema_full": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "train_seconds": self.train_seconds,
            "command": self.command,
            "rng": rng,
        }

    def eval_model(self) -> torch.nn.Module:
        if self.evaluated is not None:
            return self.evaluated
        return self.ema.module if self.ema else self.model

    def evaluate_average(self, bn_sample: np.ndarray | None) -> torch.nn.Module:
        """The weights to validate now: the average's, on a copy with its batch-norm statistics recomputed on
        `bn_sample` (uint8 training inputs) when one is given."""
        self.evaluated = None
        if bn_sample is not None and self.ema is not None:
            self.evaluated = copy.deepcopy(self.ema.module)
            recompute_batch_norm(self.evaluated, bn_sample)
        return self.eval_model()


def build_run(config: TrainConfig, steps_per_epoch: int) -> Run:
    torch.manual_seed(config.seed)
    model, _ = create_model(config.model, **config.model_args)
    model = model.to(memory_format=torch.channels_last)  # channels-last convolutions run faster on CPU
    optimizer, scheduler = build_optimizer(model, config, steps_per_epoch)
    ema = None
    if config.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=warmup_ema(config.ema_decay), use_buffers=True)
    return Run(config, model, ema, optimizer, scheduler)


def build_optimizer(model: torch.nn.Module, config: TrainConfig, steps_per_epoch: int) -> tuple:
    """(optimizer, learning-rate schedule) of the config's recipe."""
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if config.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {config.optimizer!r}: 'sgd' or 'adam'")
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # no weight decay on biases and batch-norm scales
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=config.lr, momentum=0.9, nesterov=True,
    )
    total_steps = config.epochs * steps_per_epoch
    if total_steps < MIN_ONE_CYCLE_STEPS:
        # OneCycleLR divides by zero when its warm-up phase is under one step.
        raise ValueError(f"the run has {total_steps} steps ({config.epochs} epochs x {steps_per_epoch}); the "
                         f"one-cycle schedule needs at least {MIN_ONE_CYCLE_STEPS}: train on more images "
                         "(--limit-train), for more --epochs, or with a smaller --batch-size")
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.2)


def warmup_ema(decay: float) -> Callable:
    """EMA whose decay ramps up as (1 + n) / (10 + n): early averages are not dominated by the random init."""

    @torch.no_grad()
    def update(ema_params: list, current_params: list, num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, current_params, 1 - d)
        else:  # batch-norm step counters: just follow the model
            for ema_p, p in zip(ema_params, current_params):
                ema_p.copy_(p)

    return update


def restore_run(saved: dict, steps_per_epoch: int) -> Run:
    run = build_run(TrainConfig.from_dict(saved["config"]), steps_per_epoch)
    run.model.load_state_dict(saved["model"])
    if run.ema is not None:
        run.ema.load_state_dict(saved["ema_full"])
        if run.config.bn_images and saved["ema"] is not None:  # the weights last validated, as they were saved
            run.evaluated = copy.deepcopy(run.ema.module)
            run.evaluated.load_state_dict(saved["ema"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    for key in ("epoch", "step_in_epoch", "history", "best_val_acc", "train_seconds", "command"):
        setattr(run, key, saved[key])
    return run


def start_run(config: TrainConfig, steps_per_epoch: int, command: str) -> Run:
    """A new run; fine-tuning starts from an exported model.pt or a training checkpoint (its averaged weights)."""
    run = build_run(config, steps_per_epoch)
    if config.init_weights:
        path = Path(config.init_weights)
        try:
            run.model.load_state_dict(checkpoint.read_weights(path).state_dict)
        except Exception as err:  # damaged file, wrong architecture: say which and why
            raise checkpoint.CheckpointError(
                f"{path}: cannot start from these weights ({type(err).__name__}: {err})") from err
        if run.ema is not None:
            run.ema.module.load_state_dict(run.model.state_dict())
    run.command = command
    return run
