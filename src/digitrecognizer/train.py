"""Training: the inputs of a run, and the `Trainer` that runs its epochs on one or several processes, checkpoints
each, and resumes exactly where a run stopped (torch)."""

from __future__ import annotations

import gc
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, corpus, data, distributed, synth, writers
from .augment import Distortions, apply_distortions, draw_distortions
from .recipes import TrainConfig, config_of
from .constants import NOT_A_DIGIT
from .models import normalize, predict_logits, unit_range
from .run_state import Run, restore_run, start_run

LAST, BEST, LOG = "last.pt", "best.pt", "metrics.jsonl"
SCRIBBLE_POOL = 10_000  # distinct scribbles for outlier exposure; distortions make each one look different each time
SCRIBBLE_SEED = 4242  # not the seeds of the non-digits that measure refusal (another generator altogether)
BN_SAMPLE_SEED = 0


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass
class TrainingSet:
    """The training inputs as tensors, kept as uint8 and converted batch by batch."""

    images: torch.Tensor  # (N, 1, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64
    scribbles: torch.Tensor | None  # (S, 1, 28, 28) uint8 for outlier exposure, rendered once
    bn_sample: np.ndarray | None = None  # (B, 28, 28) uint8 inputs the averaged weights' batch-norm statistics come from

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self.labels) // batch_size)  # drop the ragged last batch: steady batch-norm statistics


def outliers_per_batch(config: TrainConfig, processes: distributed.Processes) -> int:
    """Scribbles in each batch, a multiple of the process count so that each process gets the same share."""
    return processes.world_size * round(config.outliers * config.batch_size / processes.world_size)


def training_split(config: TrainConfig, mnist_train: data.MnistSplit, data_dir: Path | None) -> data.MnistSplit:
    """MNIST's training part, limited, with the extra examples and the corpus the config asks for."""
    split = mnist_train
    if config.limit_train:
        split = data.MnistSplit(split.images[: config.limit_train], split.labels[: config.limit_train])
    if config.extra_data:
        split = data.concatenate([split] + [data.load_extra_data(Path(config.extra_data))] * config.extra_repeat)
    if config.corpus.enabled:
        if config.corpus.negatives and config.model_args.get("classes", 10) != NOT_A_DIGIT + 1:
            raise ValueError("non-digits need the eleventh output: set model_args classes=11")
        # Generators that redraw MNIST digits get the training part only: never validation digits.
        split = data.concatenate([split, corpus.build(config.corpus, mnist_train, writers.default_writers_dir(data_dir))])
    return split


def load_training_set(config: TrainConfig, data_dir: Path | None,
                      processes: distributed.Processes) -> tuple[TrainingSet, data.MnistSplit]:
    """(training inputs, validation split) of the config."""
    train_split, val_split = config.split(data.load_split(data_dir, "train"))
    split = training_split(config, train_split, data_dir)
    scribbles = None
    if outliers_per_batch(config, processes):
        # Rendered once, as preprocessing leaves them, then distorted like the digits.
        scribbles = torch.from_numpy(synth.scribble_inputs(SCRIBBLE_POOL, SCRIBBLE_SEED)).unsqueeze(1)
    images = torch.from_numpy(np.ascontiguousarray(split.images)).unsqueeze(1)
    bn_sample = None
    if config.bn_images and config.ema_decay:
        picked = np.random.default_rng(BN_SAMPLE_SEED).choice(len(split), min(config.bn_images, len(split)), replace=False)
        bn_sample = split.images[np.sort(picked)]
    return TrainingSet(images, torch.from_numpy(split.labels), scribbles, bn_sample), val_split


# ----------------------------------------------------------------------------------------------
# Randomness: every epoch draws from its own seeded streams, so a resumed run sees the same batches and distortions


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # Every process draws the whole stream, so all of them see the same permutation and distortions.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def dropout_seed(seed: int, epoch: int, processes: distributed.Processes) -> int:
    # Dropout differs per process (its own images), yet stays seeded; one process keeps the seed it always had.
    return (seed * 100_003 + epoch) * processes.world_size + processes.rank


def restore_dropout_stream(saved: list | torch.Tensor, seed: int, epoch: int, processes: distributed.Processes) -> None:
    """Each process continues its own saved dropout stream; a process the saved run did not have starts a seeded one."""
    streams = [saved] if isinstance(saved, torch.Tensor) else saved  # one tensor: saved before several processes
    if processes.rank < len(streams):
        torch.set_rng_state(streams[processes.rank])
    else:
        torch.manual_seed(dropout_seed(seed, epoch, processes))


def stretch_only(distortions: Distortions, labels: torch.Tensor, stretched: list[int]) -> None:
    """Leave unstretched the examples of a batch whose label is not in `stretched` (`AugmentConfig.square_labels`)."""
    if distortions.square is not None:
        distortions.square[~torch.isin(labels, torch.tensor(stretched, dtype=labels.dtype))] = 0


def validate(model: torch.nn.Module, split: data.MnistSplit, processes: distributed.Processes) -> tuple[float, float, float]:
    """(loss, accuracy, share called "not a digit") on the split. Accuracy is the top guess among the ten digits, as
    the product reads a digit; whether to refuse is its thresholds' call, set at export. On several processes each
    measures a contiguous share and the sums are shared."""
    start, stop = (len(split) * r // processes.world_size for r in (processes.rank, processes.rank + 1))
    logits = predict_logits(model, split.images[start:stop])
    labels = torch.from_numpy(split.labels[start:stop])
    loss_sum = F.cross_entropy(logits, labels, reduction="sum").item() if len(labels) else 0.0
    correct = (logits[:, :NOT_A_DIGIT].argmax(1) == labels).sum().item()
    not_digit = (logits.argmax(1) == NOT_A_DIGIT).sum().item()
    loss_sum, correct, not_digit, count = processes.sum([loss_sum, correct, not_digit, len(labels)])
    return (loss_sum / count, correct / count, not_digit / count) if count else (float("nan"),) * 3


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class Hooks:
    """What callers see of a run: a progress bar, and calls that let tests and benchmarks step in."""

    progress: bool = True
    on_step: Callable[[int], None] | None = None  # with the global step, before it runs
    on_epoch_end: Callable[[Run], None] | None = None


@dataclass
class EpochTotals:
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0

    def add(self, loss: float, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss * len(labels)
        self.correct += (logits.argmax(1) == labels).sum().item()
        self.seen += len(labels)


class Trainer:
    """Trains a run on this process, on its share of every batch; the shape of pytorch/examples'
    ddp-tutorial-series/multigpu_torchrun.py. On one process the share is the whole batch."""

    def __init__(self, run: Run, inputs: TrainingSet, val: data.MnistSplit, out_dir: Path,
                 processes: distributed.Processes, hooks: Hooks):
        self.run, self.config, self.inputs, self.val = run, run.config, inputs, val
        self.out_dir, self.processes, self.hooks = out_dir, processes, hooks
        self.model = distributed.data_parallel(run.model, processes)  # what training steps call
        # Every process slices its rows out of each batch of the one seeded permutation, so a batch holds the same
        # images on any number of processes. (torch's DistributedSampler deals the epoch's indices out
        # round-robin instead: other batches than one process would see.)
        self.share = processes.share(self.config.batch_size)
        self.outliers = outliers_per_batch(self.config, processes)
        self.outlier_share = processes.share(self.outliers) if self.outliers else None
        self.steps = inputs.steps_per_epoch(self.config.batch_size)

    def train(self, rng: dict | None = None) -> Run:
        """Run the epochs left; `rng` (from an interrupted checkpoint) continues inside its epoch."""
        while self.run.epoch < self.config.last_epoch:
            self.run_epoch(rng)
            rng = None
        return self.run

    def run_epoch(self, rng: dict | None) -> None:
        """One pass over the training set. Ctrl-C saves the exact position (also of the random streams) and re-raises."""
        g, order = self._epoch_streams(rng)
        self.model.train()
        totals, started = EpochTotals(), time.perf_counter()
        bar = self._progress_bar()
        try:
            for step in bar:
                if self.hooks.on_step is not None:
                    self.hooks.on_step(self.run.epoch * self.steps + step)
                if self.processes.agree_to_stop():
                    raise KeyboardInterrupt
                batch = order[step * self.config.batch_size : (step + 1) * self.config.batch_size]
                totals.add(*self.run_batch(batch, g))
                self.run.step_in_epoch = step + 1
                if step % 20 == 0:
                    self._show(bar, totals, started)
        except KeyboardInterrupt:
            self.run.train_seconds += time.perf_counter() - started
            self.save_interrupted(g)
            raise
        finally:
            bar.close()
        self._end_epoch(totals, time.perf_counter() - started)

    def run_batch(self, batch: torch.Tensor, g: torch.Generator) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimisation step on this process's share of `batch`; returns (loss, digit logits, labels)."""
        x, y = self._batch_inputs(batch, g)
        # The mean over this share: averaging the gradients over equal shares gives the batch mean's.
        logits = self.model(x)
        logits, scribble_logits = logits[: len(y)], logits[len(y) :]  # no scribbles: the second is empty
        loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        if self.inputs.scribbles is not None:
            # Cross-entropy against equal probabilities: the mean of -log p over the outputs.
            loss = loss - self.config.outlier_weight * F.log_softmax(scribble_logits, 1).mean()
        self.run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.run.optimizer.step()
        self.run.scheduler.step()
        if self.run.ema is not None:
            self.run.ema.update_parameters(self.run.model)
        return loss.item(), logits, y

    def save(self, record: dict, improved: bool) -> None:
        """Checkpoint the finished epoch (the first process only), then log it: a logged epoch is always saved."""
        state = self.run.state()
        if improved:
            checkpoint.save(state, self.out_dir / BEST)
        if self.config.keep_epochs:
            (self.out_dir / "epochs").mkdir(exist_ok=True)
            checkpoint.save({"config": state["config"], "epoch": self.run.epoch, "ema": state["ema"] or state["model"],
                             "val_acc": record["val_acc"]}, self.out_dir / "epochs" / f"{self.run.epoch:03d}.pt")
        checkpoint.save(state, self.out_dir / LAST)
        with open(self.out_dir / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_interrupted(self, g: torch.Generator) -> None:
        """Save the position inside the epoch, with every process's dropout stream."""
        dropout_streams = self.processes.gather(torch.get_rng_state())
        if self.processes.is_main:
            checkpoint.save(self.run.state({"generator": g.get_state(), "torch": dropout_streams}), self.out_dir / LAST)
        self.processes.barrier()  # torchrun stops them all once one exits: let the save finish first

    def _epoch_streams(self, rng: dict | None) -> tuple[torch.Generator, torch.Tensor]:
        seed, epoch = self.config.seed, self.run.epoch
        g = epoch_generator(seed, epoch)
        order = torch.randperm(len(self.inputs.labels), generator=g)
        if rng is not None:  # continuing inside an interrupted epoch
            g.set_state(rng["generator"])
            restore_dropout_stream(rng["torch"], seed, epoch, self.processes)
        else:
            torch.manual_seed(dropout_seed(seed, epoch, self.processes))
        return g, order

    def _batch_inputs(self, batch: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        augment = self.config.augment
        # Distortions are drawn for the whole batch on every process, which keeps the generators in step and
        # distorts each image as one process would; each process then distorts only its share.
        distortions = draw_distortions(len(batch), augment, g) if augment.enabled else None
        if distortions is not None and augment.square_labels is not None:
            stretch_only(distortions, self.inputs.labels[batch], augment.square_labels)
        idx = batch[self.share]
        x = unit_range(self.inputs.images[idx])
        if distortions is not None:
            x = apply_distortions(x, distortions[self.share])
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        if self.inputs.scribbles is not None:  # drawn after the digits' randomness: runs without outliers are unchanged
            picked = torch.randint(len(self.inputs.scribbles), (self.outliers,), generator=g)[self.outlier_share]
            scribble_distortions = draw_distortions(self.outliers, augment, g)[self.outlier_share]
            scribbles = apply_distortions(unit_range(self.inputs.scribbles[picked]), scribble_distortions)
            x = torch.cat([x, normalize(scribbles).contiguous(memory_format=torch.channels_last)])
        return x, self.inputs.labels[idx]

    def _end_epoch(self, totals: EpochTotals, seconds: float) -> None:
        run, epoch = self.run, self.run.epoch + 1
        run.train_seconds += seconds
        loss_sum, correct, seen = self.processes.sum([totals.loss_sum, totals.correct, totals.seen])
        val_loss, val_acc, val_not_digit = validate(run.evaluate_average(self.inputs.bn_sample), self.val, self.processes)
        record = {
            "epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "val_loss": val_loss, "val_acc": val_acc, "val_not_a_digit": val_not_digit, "lr": run.scheduler.get_last_lr()[0],
            "epoch_seconds": seconds, "images_per_s": seen / seconds, "processes": self.processes.world_size,
        }
        run.history.append(record)
        run.epoch, run.step_in_epoch = epoch, 0
        improved = val_acc >= run.best_val_acc  # ties go to the later, longer-trained weights
        run.best_val_acc = max(run.best_val_acc, val_acc)
        if self.processes.is_main:
            self.save(record, improved)
        if self.hooks.on_epoch_end is not None:
            self.hooks.on_epoch_end(run)
        if self.processes.is_main:
            tqdm.write(f"epoch {epoch}/{self.config.last_epoch}: train loss {record['train_loss']:.4f} acc "
                       f"{record['train_acc']:.4f} | val loss {val_loss:.4f} acc {val_acc:.4%} | {seconds:.0f}s",
                       file=sys.stderr)

    def _progress_bar(self) -> tqdm:
        return tqdm(range(self.run.step_in_epoch, self.steps), total=self.steps, initial=self.run.step_in_epoch,
                    desc=f"epoch {self.run.epoch + 1}/{self.config.last_epoch}", unit="batch",
                    disable=not (self.hooks.progress and self.processes.is_main), dynamic_ncols=True)

    def _show(self, bar: tqdm, totals: EpochTotals, started: float) -> None:
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{totals.loss_sum / totals.seen:.4f}", acc=f"{totals.correct / totals.seen:.4f}",
                        img_s=f"{totals.seen * self.processes.world_size / max(elapsed, 1e-9):.0f}",
                        lr=f"{self.run.scheduler.get_last_lr()[0]:.4f}")


def fit(
    config: TrainConfig,
    out_dir: Path,
    data_dir: Path | None,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[Run], None] | None = None,
    progress: bool = True,
    command: str | None = None,
    processes: distributed.Processes | None = None,
) -> Run:
    """Train until config.last_epoch epochs are done, checkpointing to out_dir after each; returns the finished run.

    Ctrl-C (KeyboardInterrupt, also raised by `on_step` in tests) saves the exact position and re-raises.
    `on_epoch_end` lets benchmarks measure each epoch's model (the test set is never read here).
    Under torchrun (`processes` defaults to what its environment says) each process trains on its share of every
    batch; `on_step` and `on_epoch_end` run on every process, and must raise at the same step on all of them.
    """
    processes = processes or distributed.Processes.from_environment()
    with distributed.joined(processes):
        trainer, rng = prepare(config, Path(out_dir), data_dir, resume, command, processes,
                               Hooks(progress, on_step, on_epoch_end))
        run = trainer.train(rng)
        # DistributedDataParallel holds the process group, and sits in reference cycles: freed only by a later
        # garbage collection, perhaps at interpreter exit, where gloo's threads end in "terminate called without an
        # active exception". Free it while the group is alive.
        del trainer
        gc.collect()
    return run


def prepare(config: TrainConfig, out_dir: Path, data_dir: Path | None, resume: bool, command: str | None,
            processes: distributed.Processes, hooks: Hooks) -> tuple[Trainer, dict | None]:
    """The trainer of a new or resumed run, and the random state to continue an interrupted epoch from."""
    if processes.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    saved = checkpoint.load(out_dir / LAST) if resume else None  # every process reads it: all continue alike
    if saved is not None:
        config = config_of(saved, out_dir / LAST)  # the saved config wins: a resumed run is the same run
    torch.set_num_threads(config.threads or processes.default_threads())
    processes.share(config.batch_size)  # a batch that does not split over the processes is refused before any work
    inputs, val = load_training_set(config, data_dir, processes)
    steps = inputs.steps_per_epoch(config.batch_size)
    if saved is not None:
        run = restore_run(saved, steps)
        if processes.is_main:
            # The checkpoint is the truth: drop log lines of an epoch that was killed before it was saved.
            (out_dir / LOG).write_text("".join(json.dumps(r) + "\n" for r in run.history))
    else:
        run = start_run(config, steps, command or launch_command(processes))
        if processes.is_main:
            (out_dir / LOG).write_text("")
            (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    return Trainer(run, inputs, val, out_dir, processes, hooks), saved["rng"] if saved is not None else None


def launch_command(processes: distributed.Processes) -> str:
    """The command line that started this run, for the checkpoint and the model card."""
    if not processes.several:
        return shlex.join(["digitrecognizer", *sys.argv[1:]])
    nodes = processes.world_size // processes.local_world_size
    launcher = ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else ["--standalone"]),
                f"--nproc_per_node={processes.local_world_size}", "-m", "digitrecognizer.cli"]
    return shlex.join([*launcher, *sys.argv[1:]])

