"""The claims' baseline, block by block: each MPRNet configuration's building blocks timed in PyTorch.

    python benchmarks/mprnet_blocks.py [--tasks deblur denoise derain] [--size 256]
                                       [--threads 2] [--rounds 5] [--keep-freed-memory]

One forward pass of the whole network records the inputs each block really receives (stage-1
encoder on a quarter, decoders, stage-2 encoder with the fusions, ORSNet at full resolution, one
CAB at each width); then every block, the whole network and two CABs of the widest level, one with
its residual added in place (as export/mprnet.py and the official code write it) and one with a
fresh tensor, and the whole network with every residual fresh, run in alternated rounds. Prints medians, spreads and each block's share of the
network, and the fresh/in-place ratio: a regression in any block shows in its row. By default the
process allocates as any plain process does (what makes the fresh residual costly);
--keep-freed-memory applies the regime `hinet-deploy claims` measures in.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from hinet_deploy.checks.timing import alternated_rounds, device_name, freed_memory_kept
import copy

from hinet_deploy.export.mprnet import CAB, CONFIGS, ORB, mprnet

# name: the module's path in MPRNet (the first call of it is the one timed)
BLOCKS = {
    "shallow_feat3 (full size)": "shallow_feat3",
    "stage1 encoder (a quarter)": "stage1_encoder",
    "stage1 decoder (a half)": "stage1_decoder",
    "stage2 encoder + fusions (a half)": "stage2_encoder",
    "stage2 decoder (full size)": "stage2_decoder",
    "ORSNet (full size)": "stage3_orsnet",
    "one CAB of ORSNet (full size)": "stage3_orsnet.orb1.body.0",
    "sam23": "sam23",
}


class FreshResidualCAB(CAB):
    """A CAB whose residual makes a new tensor: what the baseline was before it matched the
    official code."""

    def forward(self, x):
        return self.CA(self.body(x)) + x


class FreshResidualORB(ORB):
    def forward(self, x):
        return self.body(x) + x


def with_fresh_residuals(net):
    """A copy of the network whose CABs and ORBs add their residuals into new tensors."""
    fresh = copy.deepcopy(net)
    for module in fresh.modules():
        if type(module) is CAB:
            module.__class__ = FreshResidualCAB
        elif type(module) is ORB:
            module.__class__ = FreshResidualORB
    return fresh


def recorded_inputs(net, x) -> dict[str, tuple]:
    """The positional inputs of the first call of each block during one forward pass."""
    seen, handles = {}, []
    for name, path in BLOCKS.items():
        module = net.get_submodule(path)
        handles.append(module.register_forward_pre_hook(
            lambda m, args, name=name: seen.setdefault(name, args) and None))
    net(x)
    for handle in handles:
        handle.remove()
    return seen


def measure(task: str, size: int, rounds: int) -> list[tuple[str, float, float, float]]:
    torch.manual_seed(0)
    net = mprnet(task).eval()
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        inputs = recorded_inputs(net, x)
        fresh_net = with_fresh_residuals(net)
        runners = {"whole network": lambda: net(x),
                   "whole network, fresh residuals": lambda: fresh_net(x)}
        for name, path in BLOCKS.items():
            module, args = net.get_submodule(path), inputs[name]
            runners[name] = lambda m=module, a=args: m(*a)
        cab = net.get_submodule(BLOCKS["one CAB of ORSNet (full size)"])
        fresh = FreshResidualCAB(cab.body[0].in_channels, CONFIGS[task], cab.body[1])
        fresh.load_state_dict(cab.state_dict())
        fresh.eval()
        cab_input = inputs["one CAB of ORSNet (full size)"]
        runners["the same CAB, fresh residual"] = lambda: fresh(*cab_input)
        for run in runners.values():
            run()  # warm-up
        times = alternated_rounds(runners, rounds)
    whole = statistics.median(times["whole network"])
    return [(name, statistics.median(t), min(t), max(t)) for name, t in times.items()] + \
        [("", whole, 0.0, 0.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--size", type=int, default=256, help="input height and width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="the allocator regime `hinet-deploy claims` measures in")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        allocator = stack.enter_context(freed_memory_kept()) if args.keep_freed_memory \
            else "as it comes"
        report(args, allocator)


def report(args, allocator: str) -> None:
    print(f"device: {device_name()}; 1x3x{args.size}x{args.size}; {args.threads} threads; "
          f"median of {args.rounds} alternated rounds (min-max); allocator: {allocator}")
    for task in args.tasks:
        rows = measure(task, args.size, args.rounds)
        whole = rows.pop()[1]
        print(f"\nMPRNet {task} ({CONFIGS[task].n_feat} channels)\n")
        print("| block | ms | share of the network |\n|---|---|---|")
        for name, median, low, high in rows:
            print(f"| {name} | {1e3 * median:.1f} ({1e3 * low:.1f}-{1e3 * high:.1f}) | "
                  f"{100 * median / whole:.1f} % |")
        t = {name: median for name, median, _, _ in rows}
        print(f"\nfresh residuals / in place: whole network "
              f"{t['whole network, fresh residuals'] / t['whole network']:.2f}x, one CAB alone "
              f"{t['the same CAB, fresh residual'] / t['one CAB of ORSNet (full size)']:.2f}x")


if __name__ == "__main__":
    main()
