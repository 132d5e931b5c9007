"""PixelCNN sampling: npar's cached engine against npar's naive engine and a
naive PyTorch loop, with the same weights and the same random draws.

Times the generation of ``--n`` MNIST-sized images (28 x 28) from the
default Gated PixelCNN (or ``--ckpt``). The naive engines run one full
forward pass per sub-pixel, so their cost per sub-pixel is constant: with
``--quick`` (or ``--pixels P``) only the first ``P`` sub-pixels are timed
and a whole run is estimated as the median time of one sub-pixel times
``C H W`` (the median, so that a burst of other work on a shared machine
does not count); the JSON says so (``naive_extrapolated``). All three
engines draw from the same seed; the images of the sub-pixels they all
reach must be identical, and their per-pixel probabilities are compared.

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


def naive_loop(logits_of, model, n, size, rng, stop_after):
    """The naive generation loop around ``logits_of(x, i, j, c) -> (N, V)``
    (one full forward pass per sub-pixel), the draw made by npar's
    strategies, so that every engine uses the same random stream. Returns
    the images, the probabilities and the wall time of every sub-pixel."""
    from npar.sampling import strategies

    channels = model.image_channels
    height, width = size
    x = np.zeros((n, channels, height, width), dtype=np.uint8)
    probs = np.zeros((n, channels, height, width, model.levels))
    times = []
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                if len(times) == stop_after:
                    return x, probs, np.array(times)
                start = time.perf_counter()
                logits = logits_of(x, i, j, c)
                x[:, c, i, j] = strategies.sample(logits, rng)
                times.append(time.perf_counter() - start)
                probs[:, c, i, j] = strategies.temperature_probs(logits, 1.0)
    return x, probs, np.array(times)


def torch_logits(twin, model):
    """``logits_of`` for :func:`naive_loop`: a full PyTorch forward pass."""
    import torch

    def logits_of(x, i, j, c):
        with torch.no_grad():
            rows = twin(x).numpy()
        n, channels, height, width = x.shape
        return rows.reshape(n, height, width, channels, -1)[:, i, j, c]

    return logits_of


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
    from npar.sampling.pixelcnn import generate, make_engine
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

    # The naive engines: npar's NaiveEngine (model.forward per sub-pixel) and
    # the PyTorch twin, each warmed up by a few passes first, so that
    # loading or compiling kernels (Numba's cache, PyTorch's first calls) is
    # not multiplied by the extrapolation. The estimate of a whole run is
    # the median time of one sub-pixel times C H W: robust to other work
    # on a shared machine.
    twin = TorchPixelCNN(model, {k: v.copy() for k, v in model.params.items()})
    npar_engine = make_engine(model, "naive", args.n, *size)
    engines = {"npar_naive": npar_engine.logits, "torch_naive": torch_logits(twin,
                                                                             model)}
    naive = {}
    for name, logits_of in engines.items():
        naive_loop(logits_of, model, args.n, size, np.random.default_rng(1), 3)
        cpu = time.process_time()
        naive[name] = naive_loop(logits_of, model, args.n, size,
                                 np.random.default_rng(args.seed), pixels)
        naive[name] += (time.process_time() - cpu,)

    # Compare the sub-pixels that every engine reached.
    reached = np.zeros((model.image_channels,) + size, dtype=bool)
    reached.transpose(1, 2, 0).reshape(-1)[:pixels] = True
    result = {
        "n": args.n,
        "size": list(size),
        "model": model.kind,
        "config": model.config,
        "weights": args.ckpt or "random (seed 0)",
        "cached_s": cached_wall,
        "cached_cpu_s": cached_cpu,
        "cached_first_call_s": first_wall,
    }
    for name, (images, probs, times, cpu) in naive.items():
        result[f"{name}_s"] = (float(np.median(times)) * total if pixels < total
                               else float(times.sum()))
        result[f"{name}_timed_s"] = float(times.sum())
        result[f"{name}_cpu_per_sub_pixel_s"] = cpu / pixels
        result[f"{name}_over_cached"] = result[f"{name}_s"] / cached_wall
        result[f"identical_images_cached_{name}"] = bool(
            (run.images[:, reached] == images[:, reached]).all())
        result[f"max_prob_diff_cached_{name}"] = float(
            np.abs(run.probs[:, reached] - probs[:, reached]).max())
    result.update({
        "naive_pixels_timed": pixels,
        "naive_extrapolated": pixels < total,
        "extrapolation": (f"naive runs timed on the first {pixels} of {total} "
                          f"sub-pixels; *_naive_s = median time of one sub-pixel "
                          f"x {total} (*_naive_timed_s: the time measured)")
        if pixels < total else "none: whole naive runs timed",
        "goal_cached_at_most_torch_over_50":
            cached_wall <= result["torch_naive_s"] / 50,
        "goal_cached_under_0_5_s": cached_wall < 0.5,
        "sub_pixels_compared": pixels,
        "torch_threads": args.threads,
        "load_average_1min": os.getloadavg()[0],
    })
    print(f"cached {cached_wall:.3f} s ({cached_cpu:.3f} s CPU); npar naive "
          f"{result['npar_naive_s']:.1f} s; torch naive "
          f"{result['torch_naive_s']:.1f} s"
          + (" (naive extrapolated)" if pixels < total else ""))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
