"""Teacher-training throughput on the CPU: is the model step or the input pipeline the
bottleneck?

Times, on a fixed number of steps after a warm-up, (1) the input pipeline alone
(sample a batch of uint8 images, normalise, random crop and flip, as
``teachers.train_supervised`` does), (2) the model step alone (forward, cross-entropy,
backward, SGD step, on a prepared batch) and (3) both together, for the CPU-scale
teachers. Images are random uint8 tensors of CIFAR's shape: neither stage's cost
depends on the pixel values. Prints images per second and the ratio of pipeline to
model-step throughput; a ratio well above 1 means the model step bounds training.

    python benchmarks/teacher_throughput.py --threads 2
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from dfkd_bench.data import CIFAR, Normalizer, random_crop_flip
from dfkd_bench.models import build_model, count_parameters
from dfkd_bench.teachers import TrainRecipe, make_optimizer


class Pipeline:
    """The input side of a training step: draw, normalise, augment."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        spec = CIFAR["cifar10"]
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.normalizer = Normalizer(spec.mean, spec.std)
        self.perm, self.pos = torch.randperm(len(labels)), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch_size > len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.labels)), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        x = random_crop_flip(self.normalizer.from_uint8(self.images[idx]), 4, True)
        return x, self.labels[idx]


def rate(fn, steps: int, warmup: int, batch_size: int) -> float:
    """Images per second of ``fn`` (one batch a call) over ``steps`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps * batch_size / (time.perf_counter() - started)


def model_step_fn(arch: str, batch_size: int):
    torch.manual_seed(0)
    model = build_model(arch, 10).train()
    opt, sched = make_optimizer(model, TrainRecipe(), steps_total=10_000)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    return model, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="resnet20,wrn16_2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pipeline-steps", type=int, default=200)
    ap.add_argument("--images", type=int, default=10_000, help="size of the uint8 image pool sampled from")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (args.images,), generator=g)
    bs = args.batch_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")

    pipe = Pipeline(images, labels, bs)
    pipeline_rate = rate(pipe.next, args.pipeline_steps, args.warmup, bs)
    print(f"input pipeline (sample + normalise + crop/flip): {pipeline_rate:10,.0f} images/s")

    for arch in args.archs.split(","):
        model, step = model_step_fn(arch, bs)
        x, y = pipe.next()
        model_rate = rate(lambda: step(x, y), args.steps, args.warmup, bs)
        full_rate = rate(lambda: step(*pipe.next()), args.steps, args.warmup, bs)
        epoch_s = 50_000 / full_rate
        print(f"{arch:>9} ({count_parameters(model):,} params): model step {model_rate:7,.0f} images/s, "
              f"full training step {full_rate:7,.0f} images/s (~{epoch_s / 60:.1f} min per 50k-image epoch); "
              f"pipeline/model throughput ratio {pipeline_rate / model_rate:,.0f}x, "
              f"pipeline share of a step {100 * model_rate / pipeline_rate:.1f}%")


if __name__ == "__main__":
    main()
