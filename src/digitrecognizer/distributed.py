"""Training on several processes under torchrun: who this process is, its share of each batch, batch norm over the
whole batch, the sums the loop shares, and a Ctrl-C that every process obeys at the same step (torch)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Processes:
    """This process among those training together; without torchrun, the only one (rank 0 of 1).

    Rank 0 alone shows progress, logs and writes files. The others hold the same weights after every step
    (they apply the same averaged gradients), so its checkpoints speak for all of them.
    """

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this machine: they share its cores
    stop_requested: bool = False  # set by Ctrl-C; every process stops at the first step where any has it set

    @classmethod
    def from_environment(cls) -> "Processes":
        # torchrun sets these for each process it starts.
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        return cls(rank=int(os.environ.get("RANK", 0)), world_size=world_size,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    def default_threads(self) -> int:
        # One thread per core, shared among the processes on this machine: more would only fight over the cores.
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    def share(self, batch_size: int) -> slice:
        """This process's rows of each batch. `batch_size` is the global batch: the same preset takes the same
        optimisation steps on any number of processes."""
        if batch_size % self.world_size:
            raise ValueError(f"batch size {batch_size} does not split evenly over {self.world_size} processes: "
                             f"choose a multiple of {self.world_size} (--batch-size) or another --nproc_per_node")
        per_process = batch_size // self.world_size
        return slice(self.rank * per_process, (self.rank + 1) * per_process)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all processes (in float64: counts of images stay exact)."""
        if not self.several:
            return values
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def agree_to_stop(self) -> bool:
        """True on every process if Ctrl-C reached any of them; a collective, so call it at the same point on all."""
        return self.several and self.sum([float(self.stop_requested)])[0] > 0

    def gather(self, value: object) -> list:
        """Every process's value, in rank order (a collective)."""
        if not self.several:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.several:
            dist.barrier()


@contextmanager
def joined(processes: Processes) -> Iterator[None]:
    """Join the process group for the duration, and turn Ctrl-C into a stop request instead of an exception.

    The backend is gloo: training runs on the CPU (this project installs the CPU build of PyTorch), and nccl only
    moves CUDA tensors. Ctrl-C must not raise where it lands: one process would stop mid-step while the others wait
    for it in a collective. torchrun starts each process in its own session and passes Ctrl-C on to each, once.
    """
    if not processes.several:
        yield
        return
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo")
    if dist.get_world_size() != processes.world_size:
        raise RuntimeError(f"the process group has {dist.get_world_size()} processes but WORLD_SIZE says "
                           f"{processes.world_size}: start training with torchrun, which sets both")

    def request_stop(signum: int, frame: object) -> None:
        processes.stop_requested = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
        if created:
            # Leave together. The other ranks finish before the first one, which still writes checkpoints; a rank
            # that tears the group down while its peer is busy can be aborted by gloo at exit ("terminate called
            # without an active exception"). (After Ctrl-C, the trainer has already waited for all.)
            dist.barrier()
    finally:
        signal.signal(signal.SIGINT, previous)
        if created:
            dist.destroy_process_group()


def data_parallel(model: nn.Module, processes: Processes) -> nn.Module:
    """The module to call for training steps. On several processes: `model` with its batch norms synchronised (in
    place, so `model` keeps the same parameters, state_dict keys and optimizer) inside DistributedDataParallel,
    which averages the gradients. On one: `model` itself."""
    if not processes.several:
        return model
    _synchronise_batch_norms(model)
    # Buffers need no broadcast: synchronised batch norms give every process the same running statistics.
    return DistributedDataParallel(model, forward_sync_buffers=False)


def _synchronise_batch_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm):
            setattr(module, name, GlobalBatchNorm.replacing(child))
        else:
            _synchronise_batch_norms(child)


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover the global batch, summed over all processes, so that several
    processes compute what one computes on the whole batch. Its state_dict is that of the layer it replaces.

    torch.nn.SyncBatchNorm does the same but refuses CPU tensors (its kernels exist only for GPUs).
    Cost: one small all-reduce per layer each way, and a few more passes over the activations than the fused
    BatchNorm kernel (measured in benchmarks/train_distributed.py).
    """

    @classmethod
    def replacing(cls, bn: _BatchNorm) -> "GlobalBatchNorm":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias  # the same Parameters: the optimizer already holds them
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, var = _GlobalBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            count = x.numel() // x.shape[1] * dist.get_world_size()
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * (count / (count - 1)), momentum)  # unbiased, as BatchNorm keeps it
        return y


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Forward and backward of batch norm over the global batch, the way SyncBatchNorm computes them on GPUs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float):
        reduce_dims, channels = [0, *range(2, x.dim())], x.shape[1]
        local_count = x.numel() // channels
        local_var, local_mean = torch.var_mean(x, reduce_dims, correction=0)
        # Each process's mean and spread about it combine exactly (Chan et al.) from the sums of n·mean and
        # n·(var + mean²); in float64, so that subtracting the squared global mean loses nothing.
        mean64 = local_mean.double()
        sums = torch.cat([mean64, local_var.double() + mean64.square()]) * local_count
        dist.all_reduce(sums)
        count = local_count * dist.get_world_size()
        mean64 = sums[:channels] / count
        mean, var = mean64.to(x.dtype), (sums[channels:] / count - mean64.square()).clamp_min(0).to(x.dtype)
        # The fused kernel, told to normalise with these statistics instead of computing its own.
        y = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, False)
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.count = count
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor, _mean: torch.Tensor, _var: torch.Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_count = x.numel() // x.shape[1]
        # The fused kernel's backward with the global statistics gives the gradient of a batch norm over this
        # share alone, and the local sums of grad and grad·x̂ (the weights' own gradients, which stay local: DDP
        # averages them like any other parameter's).
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_y, x, weight, None, None, mean, invstd, True, 0.0, [True, True, True])
        # The statistics depend on every process's images, so the input's gradient needs the global means of those
        # sums, where the kernel used this share's: add the difference, a + b·x per channel.
        local_sums = torch.cat([grad_bias, grad_weight])
        sums = local_sums.clone()
        dist.all_reduce(sums)
        local_mean_grad, local_mean_grad_xhat = (local_sums / local_count).chunk(2)
        mean_grad, mean_grad_xhat = (sums / ctx.count).chunk(2)
        scale = invstd if weight is None else invstd * weight
        b = scale * invstd * (local_mean_grad_xhat - mean_grad_xhat)
        a = scale * (local_mean_grad - mean_grad) - b * mean
        grad_x.add_(a.view(shape)).addcmul_(x, b.view(shape))
        if weight is None:
            return grad_x, None, None, None
        return grad_x, grad_weight, grad_bias, None
