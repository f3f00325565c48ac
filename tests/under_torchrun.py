"""What tests/test_train_distributed.py runs under torchrun: `fit` (train.fit with a given config, optionally stopped
at a step) and `batchnorm` (GlobalBatchNorm on shares of a batch against BatchNorm on the whole batch)."""

import argparse
import copy
import gc
import json
from pathlib import Path

import torch

from digitrecognizer import distributed, recipes, train


def fit(args: argparse.Namespace) -> int:
    def stop_at(step: int) -> None:
        if step == args.stop_at_step:
            raise KeyboardInterrupt  # on every process at the same step, as a Ctrl-C is obeyed

    if args.report_data_parallel:
        gc.disable()  # what `fit` leaves in reference cycles stays where this process can count it
    try:
        train.fit(recipes.TrainConfig.from_dict(json.loads(args.config)), args.out, args.data_dir, resume=args.resume,
                  on_step=stop_at, progress=False, command="tests/under_torchrun.py fit")
    except KeyboardInterrupt:
        return 130
    if args.report_data_parallel:
        alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
        print(json.dumps({"rank": distributed.Processes.from_environment().rank, "data_parallel_alive": alive}))
    return 0


def batchnorm(args: argparse.Namespace) -> int:
    processes = distributed.Processes.from_environment()
    generator = torch.Generator().manual_seed(0)  # the same batch on every process
    # A large mean, as after the first convolution on MNIST: the statistics must not lose it to cancellation.
    x = torch.randn(64, 4, 6, 6, generator=generator) * 0.5 + 3
    upstream = torch.randn(64, 4, 6, 6, generator=generator)
    reference = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5, generator=generator)
        reference.bias.uniform_(-0.5, 0.5, generator=generator)
    layer = distributed.GlobalBatchNorm.replacing(copy.deepcopy(reference).float())

    whole = x.double().requires_grad_()
    expected = reference(whole)
    (expected * upstream.double()).sum().backward()
    reference(whole.detach())  # a second step, so that the running statistics move twice

    with distributed.joined(processes):
        share = processes.share(len(x))
        part = x[share].clone(memory_format=torch.channels_last).requires_grad_()
        output = layer(part)
        (output * upstream[share]).sum().backward()
        layer(part.detach())
        # Each process holds the gradient of its share's loss; DDP would average these, the sum is the whole's.
        weight_grad, bias_grad = (torch.tensor(processes.sum(p.grad.tolist()), dtype=torch.float64)
                                  for p in (layer.weight, layer.bias))
        errors = {
            "output": (output.double() - expected[share]).abs().max().item(),
            "input_grad": (part.grad.double() - whole.grad[share]).abs().max().item(),
            "weight_grad": (weight_grad - reference.weight.grad).abs().max().item(),
            "bias_grad": (bias_grad - reference.bias.grad).abs().max().item(),
            "running_mean": (layer.running_mean.double() - reference.running_mean).abs().max().item(),
            "running_var": (layer.running_var.double() - reference.running_var).abs().max().item(),
        }
        if processes.is_main:
            print(json.dumps(errors))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("fit")
    p.add_argument("config", help="TrainConfig as JSON")
    p.add_argument("out", type=Path)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-at-step", type=int, help="raise KeyboardInterrupt on every process at this step")
    p.add_argument("--report-data-parallel", action="store_true",
                   help="with garbage collection off, print how many DistributedDataParallel modules outlive fit")
    p.set_defaults(func=fit)
    p = commands.add_parser("batchnorm")
    p.set_defaults(func=batchnorm)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
