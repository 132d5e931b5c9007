"""npar's WaveNet against the same WaveNet in PyTorch, with the same weights.

Prints the largest difference of the logits, the time of a training step
(forward, backward and an Adam update) in both and their ratio, and
generation speed in samples per second for npar's cached engine, npar's
naive engine and a naive PyTorch loop (the full forward pass over the
receptive field for every sample). The last line is a JSON object with
every figure.

    python bench/wavenet_vs_torch.py            # about 3 minutes
    python bench/wavenet_vs_torch.py --quick    # under a minute

``--threads`` (default 2) sets both PyTorch's threads and the BLAS threads
that NumPy uses (through ``OPENBLAS_NUM_THREADS`` and friends, set before
NumPy is imported).
"""

import argparse
import json
import os
import sys
import time


def _timed(function):
    """``(wall seconds, CPU seconds of this process)`` of ``function()``.

    On a machine shared with other jobs the wall time measures the share of
    the CPUs this process got; the CPU time is close to what the work costs
    on an idle machine (for one thread; with several it also counts the
    time BLAS and OpenMP threads spend spinning while they wait)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=2048,
                   help="scored samples per crop (after the receptive field)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed training steps per framework (default 8, quick 3)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np
    import torch

    from npar.models.wavenet import WaveNet
    from npar.sampling.wavenet import CachedEngine, NaiveEngine
    from npar.train.optim import Adam
    from npar.verify.torch_twins import TorchWaveNet

    torch.set_num_threads(args.threads)
    steps = args.steps or (3 if args.quick else 8)
    rng = np.random.default_rng(args.seed)

    model = WaveNet(seed=args.seed)
    field = model.receptive_field()
    twin = TorchWaveNet(model)
    q = rng.integers(0, 256, (args.batch_size, field - 1 + args.crop))
    print(f"WaveNet {model.config}")
    print(f"{model.n_params()} parameters, receptive field {field}, batch "
          f"{q.shape} ({args.batch_size * args.crop} scored samples), "
          f"{args.threads} threads")

    # ---- logits -----------------------------------------------------------
    with torch.no_grad():
        logits_t = twin(q[:1], 0).numpy()
    logits_n = model.logits(q[:1]).reshape(-1, model.levels)
    max_diff = float(np.abs(logits_n - logits_t).max())
    print(f"logits: max |npar - torch| = {max_diff:.3g} (float32, "
          f"{logits_n.size} values)")

    # ---- training step ----------------------------------------------------
    optimizer = Adam(1e-4)
    torch_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-4)

    def npar_step():
        loss, grads = model.loss_and_grads(q)
        optimizer.step(model.params, grads)
        return loss

    def torch_step():
        torch_optimizer.zero_grad()
        loss = twin.loss(q)
        loss.backward()
        torch_optimizer.step()
        return loss.item()

    npar_step()
    torch_step()  # warm-up: compilation, allocator
    times = {"npar": [], "torch": [], "npar_cpu": [], "torch_cpu": []}
    for _ in range(steps):  # interleaved, so that load on the machine hits both
        for name, step in (("npar", npar_step), ("torch", torch_step)):
            wall, cpu = _timed(step)
            times[name].append(wall)
            times[f"{name}_cpu"].append(cpu)
    median = {name: float(np.median(values)) for name, values in times.items()}
    npar_step_s, torch_step_s = median["npar"], median["torch"]
    ratio = npar_step_s / torch_step_s
    cpu_ratio = median["npar_cpu"] / median["torch_cpu"]
    print(f"training step: npar {npar_step_s:.3f} s, torch {torch_step_s:.3f} s "
          f"(medians of {steps}); npar/torch = {ratio:.2f}")
    print(f"  CPU time of the process: npar {median['npar_cpu']:.3f} s, torch "
          f"{median['torch_cpu']:.3f} s; npar/torch = {cpu_ratio:.2f}")

    # ---- generation ---------------------------------------------------------
    prompt = rng.integers(0, 256, field + 100)
    n_cached = 4000 if args.quick else 16000
    n_naive = 10 if args.quick else 30

    cached = CachedEngine(model)
    cached.generate(10, np.random.default_rng(0), 1.0, prompt)  # compile
    wall, cpu = _timed(lambda: cached.generate(n_cached, np.random.default_rng(0),
                                               1.0, prompt))
    cached_rate, cached_cpu_rate = n_cached / wall, n_cached / cpu

    naive = NaiveEngine(model)
    naive.generate(1, np.random.default_rng(0), 1.0, prompt)
    wall, cpu = _timed(lambda: naive.generate(n_naive, np.random.default_rng(0),
                                              1.0, prompt))
    naive_rate, naive_cpu_rate = n_naive / wall, n_naive / cpu

    def torch_naive():
        history = list(prompt)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _ in range(n_naive):
                window = np.array(history[-(field - 1):] + [0])[None, :]
                logits = twin(window, field - 1)[0]
                history.append(int(torch.multinomial(torch.softmax(logits, -1), 1,
                                                     generator=gen)))

    wall, cpu = _timed(torch_naive)
    torch_naive_rate, torch_naive_cpu_rate = n_naive / wall, n_naive / cpu
    print(f"generation: npar cached {cached_rate:.0f} samples/s, npar naive "
          f"{naive_rate:.1f} samples/s, torch naive {torch_naive_rate:.1f} "
          f"samples/s; cached/naive = {cached_rate / naive_rate:.0f}x")
    print(f"  per CPU second: npar cached {cached_cpu_rate:.0f}, npar naive "
          f"{naive_cpu_rate:.1f}, torch naive {torch_naive_cpu_rate:.1f}")

    figures = {
        "params": model.n_params(),
        "receptive_field": field,
        "batch": list(q.shape),
        "threads": args.threads,
        "logits_max_abs_diff": max_diff,
        "npar_step_s": npar_step_s,
        "torch_step_s": torch_step_s,
        "step_ratio_npar_over_torch": ratio,
        "npar_step_cpu_s": median["npar_cpu"],
        "torch_step_cpu_s": median["torch_cpu"],
        "step_cpu_ratio_npar_over_torch": cpu_ratio,
        "npar_cached_samples_per_s": cached_rate,
        "npar_naive_samples_per_s": naive_rate,
        "torch_naive_samples_per_s": torch_naive_rate,
        "cached_over_naive": cached_rate / naive_rate,
        "npar_cached_samples_per_cpu_s": cached_cpu_rate,
        "npar_naive_samples_per_cpu_s": naive_cpu_rate,
        "torch_naive_samples_per_cpu_s": torch_naive_cpu_rate,
        "load_average_1min": os.getloadavg()[0],
        "quick": args.quick,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
