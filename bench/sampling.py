"""PixelCNN sampling: npar's cached engine against npar's naive engine and a
naive PyTorch loop, with the same weights and the same random draws.

Times the generation of ``--n`` MNIST-sized images (28 x 28) from the
default Gated PixelCNN (or ``--ckpt``). The naive engines run one full
forward pass per sub-pixel, so their cost per sub-pixel is constant: with
``--quick`` (or ``--pixels P``) only the first ``P`` sub-pixels are timed
and the total is extrapolated as ``time * C H W / P``; the JSON says so
(``naive_extrapolated``). All three engines draw from the same seed; the
images of the sub-pixels they all reach must be identical, and their
per-pixel probabilities are compared.

    python bench/sampling.py --quick    # under a minute
    python bench/sampling.py            # full naive runs (several minutes)

The last line of output is a JSON object.
"""

import argparse
import json
import os
import time

import numpy as np


def timed(function, repeats=1):
    """Median wall time, median process CPU time, and the last result."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus)), result


def torch_naive(twin, model, n, size, rng, stop_after, labels=None):
    """The naive loop in PyTorch: one full forward per sub-pixel, the draw
    made by npar's strategies (so the random stream is the same)."""
    import torch

    from npar.sampling import strategies

    if labels is not None:
        raise NotImplementedError("the PyTorch twin has no class-conditional gates")
    channels = model.image_channels
    height, width = size
    x = np.zeros((n, channels, height, width), dtype=np.uint8)
    probs = np.zeros((n, channels, height, width, model.levels))
    done = 0
    with torch.no_grad():
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    if done == stop_after:
                        return x, probs
                    rows = twin(x).numpy().reshape(n, height, width, channels, -1)
                    logits = rows[:, i, j, c]
                    probs[:, c, i, j] = strategies.temperature_probs(logits, 1.0)
                    x[:, c, i, j] = strategies.sample(logits, rng)
                    done += 1
    return x, probs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="time 8 sub-pixels of the naive engines, extrapolate")
    parser.add_argument("--pixels", type=int, default=None,
                        help="sub-pixels to time in the naive engines (default "
                        "all, 8 with --quick)")
    parser.add_argument("--n", type=int, default=16, help="images (default 16)")
    parser.add_argument("--ckpt", default=None,
                        help="a Gated PixelCNN checkpoint (default: the default "
                        "config, random weights of seed 0)")
    parser.add_argument("--threads", type=int, default=2,
                        help="PyTorch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the cached engine (median)")
    args = parser.parse_args(argv)

    import torch

    from npar.models.io import load
    from npar.models.pixelcnn import GatedPixelCNN
    from npar.sampling.pixelcnn import generate
    from npar.verify.torch_twins import TorchPixelCNN

    torch.set_num_threads(args.threads)
    if args.ckpt:
        model = load(args.ckpt, kind="gated_pixelcnn")
    else:
        model = GatedPixelCNN(GatedPixelCNN.default_config(), seed=0)
    if model.config.get("classes"):
        raise SystemExit("the benchmark needs an unconditional model")
    size = (28, 28)
    total = model.image_channels * size[0] * size[1]
    pixels = args.pixels or (8 if args.quick else total)
    pixels = min(pixels, total)

    def cached():
        return generate(model, args.n, np.random.default_rng(args.seed), size=size,
                        record_probs=True)

    # The first call loads the compiled kernels from Numba's cache (or
    # compiles them); it is timed on its own.
    first_wall, _, _ = timed(lambda: generate(model, 1, np.random.default_rng(0),
                                              size=(2, 2)))
    cached_wall, cached_cpu, run = timed(cached, args.repeats)

    naive_wall, naive_cpu, naive = timed(lambda: generate(
        model, args.n, np.random.default_rng(args.seed), size=size, engine="naive",
        record_probs=True, stop_after=pixels))

    twin = TorchPixelCNN(model, {k: v.copy() for k, v in model.params.items()})
    torch_wall, torch_cpu, (torch_images, torch_probs) = timed(lambda: torch_naive(
        twin, model, args.n, size, np.random.default_rng(args.seed), pixels))

    # Compare the sub-pixels that every engine reached.
    reached = np.zeros((model.image_channels,) + size, dtype=bool)
    reached.transpose(1, 2, 0).reshape(-1)[:pixels] = True
    same_naive = bool((run.images[:, reached] == naive.images[:, reached]).all())
    same_torch = bool((run.images[:, reached] == torch_images[:, reached]).all())
    prob_naive = float(np.abs(run.probs[:, reached] - naive.probs[:, reached]).max())
    prob_torch = float(np.abs(run.probs[:, reached] - torch_probs[:, reached]).max())

    scale = total / pixels
    result = {
        "n": args.n,
        "size": list(size),
        "model": model.kind,
        "config": model.config,
        "weights": args.ckpt or "random (seed 0)",
        "cached_s": cached_wall,
        "cached_cpu_s": cached_cpu,
        "cached_first_call_s": first_wall,
        "npar_naive_s": naive_wall * scale,
        "torch_naive_s": torch_wall * scale,
        "npar_naive_cpu_s": naive_cpu * scale,
        "torch_naive_cpu_s": torch_cpu * scale,
        "naive_pixels_timed": pixels,
        "naive_extrapolated": pixels < total,
        "extrapolation": (f"naive times measured on the first {pixels} of {total} "
                          f"sub-pixels and multiplied by {scale:.1f}")
        if pixels < total else "none: full naive runs",
        "torch_naive_over_cached": torch_wall * scale / cached_wall,
        "npar_naive_over_cached": naive_wall * scale / cached_wall,
        "goal_cached_at_most_torch_over_50": cached_wall <= torch_wall * scale / 50,
        "goal_cached_under_0_5_s": cached_wall < 0.5,
        "identical_images_cached_naive": same_naive,
        "identical_images_cached_torch": same_torch,
        "sub_pixels_compared": pixels,
        "max_prob_diff_cached_naive": prob_naive,
        "max_prob_diff_cached_torch": prob_torch,
        "torch_threads": args.threads,
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"cached {cached_wall:.3f} s ({cached_cpu:.3f} s CPU); npar naive "
          f"{result['npar_naive_s']:.1f} s; torch naive "
          f"{result['torch_naive_s']:.1f} s"
          + (" (naive extrapolated)" if pixels < total else ""))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
