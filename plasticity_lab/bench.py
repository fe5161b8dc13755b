"""``make bench``: network-steps per second of the population engine vs a naive per-example loop.

A "network-step" is one SGD step of one network on one example. The naive baseline is
the usual per-run script: an nn.Module, torch.optim.SGD, one example at a time, with
``.item()`` bookkeeping each step. Everything is measured in the same process, on the
same data, with one thread (DESIGN: one single-threaded process per core), best of
``--repeats`` timings. The machines are noisy, so the ratios are what to compare.

Targets: >= 25,000 network-steps/s per process at K = 16 and >= 10x the naive loop (#2);
default probes <= 5% of a run's time at K = 16 with 10,000 examples per task (#4).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from .data.permuted import PermutedImageStream
from .engine import Population
from .network import NetworkSpec
from .reference import build_mlp

TARGET_STEPS_PER_S = 25_000
TARGET_RATIO = 10.0


def bench_images(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Real MNIST if the loader finds it without downloading, else MNIST-like synthetic digits."""
    try:
        from .data.idx import load_idx_dataset

        images, labels = load_idx_dataset("mnist", "test", download=False)
        return torch.from_numpy(images[:n]), torch.from_numpy(labels[:n]), "real MNIST"
    except Exception:  # noqa: BLE001 - the bench runs anywhere; say which data it used
        g = torch.Generator().manual_seed(0)
        images = (torch.rand(n, 784, generator=g) < 0.19) * torch.randint(1, 256, (n, 784), generator=g)
        return images.to(torch.uint8), torch.randint(0, 10, (n,), generator=g), "synthetic (MNIST not found)"


def naive_steps_per_s(spec: NetworkSpec, stream: PermutedImageStream, steps: int) -> float:
    """The usual script: nn.Module + torch.optim.SGD, one example per step, .item() each step."""
    net = build_mlp(spec, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.003)
    perms, orders = stream.task_tensors(0)
    x, y = stream.gather(perms[:1], orders[:1, :steps])
    x, y = x[0], y[0]
    correct = 0
    start = time.perf_counter()
    for i in range(steps):
        out = net(x[i : i + 1])
        loss = F.cross_entropy(out, y[i : i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct += int(out.argmax(dim=1).item() == y[i].item())
    return steps / (time.perf_counter() - start)


def engine_steps_per_s(spec: NetworkSpec, stream: PermutedImageStream, K: int, steps: int) -> float:
    """Population engine, K members: the runner's own loop (chunks from the stream, then train)."""
    pop = Population(spec, list(range(K)), 0.003)
    start = time.perf_counter()
    for x, y in stream.chunks(0):
        pop.train(x[:, :steps], y[:, :steps])
        break
    pop.take_totals()
    return K * steps / (time.perf_counter() - start)


def best_of(repeats: int, fn, *args) -> float:
    return max(fn(*args) for _ in range(repeats))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="SGD steps per measurement (default 2000)")
    parser.add_argument("--population", type=int, nargs="+", default=[1, 16], help="population sizes K")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings (default 3)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--no-probes", action="store_true", help="skip the probe-overhead measurement")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    images, labels, source = bench_images(args.steps)
    spec = NetworkSpec.mlp(784, 100, 3, 10, "relu")
    K_max = max(args.population)
    stream = PermutedImageStream(images, labels, list(range(K_max)), args.steps, chunk_examples=args.steps)
    print(f"plasticity_lab bench: 784-100x3-10 relu, batch 1, SGD, {args.steps} steps, 1 thread, {source}, "
          f"best of {args.repeats}")
    naive = best_of(args.repeats, naive_steps_per_s, spec, stream, args.steps)
    results = {"naive": naive}
    print(f"  {'naive nn.Module loop':<28} {naive:>10,.0f} network-steps/s   1.0x")
    for K in args.population:
        sub = PermutedImageStream(images, labels, list(range(K)), args.steps, chunk_examples=args.steps)
        rate = best_of(args.repeats, engine_steps_per_s, spec, sub, K, args.steps)
        results[f"engine_K{K}"] = rate
        print(f"  {'engine K=' + str(K):<28} {rate:>10,.0f} network-steps/s {rate / naive:>5.1f}x")
    if 16 in args.population:
        r16 = results["engine_K16"]
        print(f"targets: K=16 >= {TARGET_STEPS_PER_S:,} steps/s: {'met' if r16 >= TARGET_STEPS_PER_S else 'MISSED'} "
              f"({r16:,.0f}); >= {TARGET_RATIO:.0f}x naive: {'met' if r16 / naive >= TARGET_RATIO else 'MISSED'} "
              f"({r16 / naive:.1f}x)")
    if not args.no_probes:
        from .probes.bench import probe_overhead

        p = probe_overhead(K=16, examples_per_task=10_000, probes="default")
        results["probe_overhead_fraction"] = p["overhead_fraction"]
        print(f"default probes, K=16, 10,000 examples/task, 500 tasks: {p['train_seconds_per_task']:.1f} s training "
              f"per task, {p['amortised_probe_seconds_per_task']:.3f} s probes per task (amortised) = "
              f"{100 * p['overhead_fraction']:.2f}% overhead (target <= 5%: "
              f"{'met' if p['overhead_fraction'] <= 0.05 else 'MISSED'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
