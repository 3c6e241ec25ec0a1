"""Training throughput (images/s) per architecture: the real train step, augmentation included.

    python bench/bench_training.py [--batch-size 64] [--iters 10] [--threads N]

Runs on the CPU, and on the GPU too when one is available. Data are random uint8 images held
on the device, as train.py holds the dataset, so the figure is the model's cost, not I/O.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from training import archs
from training.train import train_step


def bench(name: str, device: torch.device, batch: int, iters: int, warmup: int = 3) -> float:
    torch.manual_seed(0)
    model = archs.build(name).to(device).train()
    side = archs.input_size(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.ones(7, device=device))
    x = torch.randint(0, 256, (batch, side, side), dtype=torch.uint8, device=device)
    y = torch.randint(0, 7, (batch,), device=device)
    gen = torch.Generator().manual_seed(0)
    for _ in range(warmup):  # allocator, cuDNN algorithm choice, first-touch page faults
        train_step(model, opt, x, y, loss_fn, gen)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        train_step(model, opt, x, y, loss_fn, gen)  # .item() inside syncs a GPU, as in fit
        times.append(time.perf_counter() - start)
    # The median step: robust to other jobs sharing the CPU for a moment.
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--archs", nargs="+", default=list(archs.ARCHS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"batch {args.batch_size}, {args.iters} iterations after 3 warm-up, median step"
    )
    print(f"{'arch':<14} {'params':>10} {'input':>6} {'device':>8} {'images/s':>10}")
    for name in args.archs:
        params = sum(p.numel() for p in archs.build(name).parameters())
        side = archs.input_size(name)
        for device in devices:
            label = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
            rate = bench(name, device, args.batch_size, args.iters)
            print(f"{name:<14} {params:>10,} {side:>4}px {label[:8]:>8} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
