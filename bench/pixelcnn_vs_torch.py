"""Gated PixelCNN training step: npar against a PyTorch twin with the same
weights, on the same CPU threads.

Checks that both compute the same logits, then times a full training step
(forward, loss, backward, Adam update) on a batch of MNIST images, and prints
a JSON object as its last line: ``npar_step_s``, ``torch_step_s`` and
``ratio`` (npar / torch; below 1 means npar is faster).

    python bench/pixelcnn_vs_torch.py            # default model, batch 32
    python bench/pixelcnn_vs_torch.py --quick    # under a minute
"""

import argparse
import json
import os
import time

import numpy as np


def median_time(step, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 20)

    import torch

    from npar.data.mnist import load_mnist
    from npar.models.pixelcnn import GatedPixelCNN
    from npar.train.optim import Adam
    from npar.verify.torch_twins import TorchPixelCNN

    torch.set_num_threads(args.threads)
    images, _ = load_mnist("train")
    x = images[:args.batch_size]

    model = GatedPixelCNN(GatedPixelCNN.default_config(), seed=0)
    twin = TorchPixelCNN(model, {k: v.copy() for k, v in model.params.items()})

    logits_npar, _ = model.forward(model.params, x)
    with torch.no_grad():
        logits_torch = twin(x).numpy()
    max_diff = float(np.abs(logits_npar - logits_torch).max())
    if max_diff > 1e-4:
        raise SystemExit(f"logits differ by {max_diff}: the twins are not the same")

    optimizer = Adam(1e-3)

    def npar_step():
        loss, grads = model.loss_and_grads(x)
        optimizer.step(model.params, grads)

    torch_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)

    def torch_step():
        torch_optimizer.zero_grad(set_to_none=True)
        loss = twin.loss(x)
        loss.backward()
        torch_optimizer.step()

    for _ in range(2):  # warm up: compile, allocate
        npar_step()
        torch_step()
    npar_s, npar_all = median_time(npar_step, repeats)
    torch_s, torch_all = median_time(torch_step, repeats)

    result = {
        "benchmark": "gated_pixelcnn_train_step",
        "batch_size": args.batch_size,
        "image": [28, 28],
        "params": model.n_params(),
        "config": model.config,
        "threads": args.threads,
        "repeats": repeats,
        "logits_max_abs_diff": max_diff,
        "npar_step_s": npar_s,
        "torch_step_s": torch_s,
        "ratio": npar_s / torch_s,
        "npar_min_s": min(npar_all),
        "torch_min_s": min(torch_all),
        "torch_version": torch.__version__,
    }
    print(f"npar  {npar_s * 1e3:8.1f} ms/step (median of {repeats})")
    print(f"torch {torch_s * 1e3:8.1f} ms/step (median of {repeats})")
    print(f"ratio npar/torch {npar_s / torch_s:.3f}; logits differ by {max_diff:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
