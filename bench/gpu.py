"""The CUDA target on a real GPU: correctness against the CPU, then speed.

One prepared script for a machine with an NVIDIA GPU (numba-cuda
installed). In order:

1. CPU: times a training step of the default Gated PixelCNN (a batch of 32
   MNIST-sized images) and of the default WaveNet (4 crops of 2048 codes),
   and cached generation on the CPU (there is no device generation engine:
   sampling runs on the CPU from the trained parameters);
2. GPU check: needs a GPU from here on. Without one (or under the
   simulator) the script says so and stops, exit status 0, with
   ``"gpu": false`` in its JSON;
3. correctness: every CUDA kernel, forward and backward, against its CPU
   twin in float32 and float64 at moderate shapes, under the GPU launch
   plan (tolerances 1e-5 and 1e-12 relative to the largest entry), and
   three training steps of both default models against the CPU (losses to
   1e-4 relative in float32);
4. speed: the same training steps on the GPU (kernels compiled by a first
   step that is timed apart), CUDA against CPU.

The last line of output is a JSON object. It fits in 5 minutes on an H200
(``--quick``: smaller batches and fewer repeats).

    python bench/gpu.py            # or: python bench/gpu.py --quick
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npar.models.pixelcnn import GatedPixelCNN  # noqa: E402
from npar.models.wavenet import WaveNet  # noqa: E402
from npar.train.optim import Adam, clip_by_global_norm  # noqa: E402

RESULT = {"gpu": False}


def say(message):
    print(message, flush=True)


def finish(status=0):
    print(json.dumps(RESULT, sort_keys=True), flush=True)
    sys.exit(status)


def batches(kind, n_steps, batch_size, length, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "gated_pixelcnn":
        return [rng.integers(0, 256, (batch_size, 1, 28, 28)).astype(np.uint8)
                for _ in range(n_steps)]
    return [rng.integers(0, 256, (batch_size, length)) for _ in range(n_steps)]


def make_model(kind):
    return GatedPixelCNN(GatedPixelCNN.default_config(), seed=0) if \
        kind == "gated_pixelcnn" else WaveNet(WaveNet.default_config(), seed=0)


def cpu_steps(model, optimizer, data, clip=1.0, lr=1e-3):
    """Losses and per-step seconds of CPU training steps (fit's order)."""
    losses, seconds = [], []
    for batch in data:
        start = time.perf_counter()
        loss, grads = model.loss_and_grads(batch)
        clip_by_global_norm(grads, clip)
        optimizer.step(model.params, grads, lr=lr)
        seconds.append(time.perf_counter() - start)
        losses.append(loss)
    return losses, seconds


def time_cpu(args):
    say("== CPU training steps")
    timings = {}
    for kind, batch_size, length in (("gated_pixelcnn", args.image_batch, None),
                                     ("wavenet", args.audio_batch, args.crop)):
        data = batches(kind, args.repeats + 1, batch_size, length)
        _, seconds = cpu_steps(make_model(kind), Adam(1e-3), data)
        step = float(np.median(seconds[1:]))
        timings[kind] = {"cpu_step_s": step, "batch": batch_size,
                         "crop": length, "first_step_s": seconds[0]}
        say(f"{kind}: {step * 1e3:.1f} ms per CPU step")
    RESULT["cpu"] = timings

    say("== CPU cached generation")
    generation = {}
    try:
        from npar.sampling.pixelcnn import sample_images
        from npar.sampling.wavenet import generate

        model = make_model("gated_pixelcnn")
        start = time.perf_counter()
        sample_images(model, args.images, np.random.default_rng(0))
        generation["gated_pixelcnn_images_per_s"] = args.images / (
            time.perf_counter() - start)
        model = make_model("wavenet")
        start = time.perf_counter()
        generate(model, args.samples, np.random.default_rng(0))
        generation["wavenet_samples_per_s"] = args.samples / (
            time.perf_counter() - start)
        say(f"cached generation: {generation}")
    except Exception as error:  # report, do not lose the rest of the run
        generation["error"] = f"{type(error).__name__}: {error}"
        say(f"cached generation failed: {generation['error']}")
    generation["device"] = "cpu (npar has no device generation engine)"
    RESULT["generation"] = generation


def relative_error(got, expected):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0)) / scale


def kernel_checks(rng):
    """Every CUDA op against its CPU twin; returns {name: worst error}."""
    from numba import cuda

    from npar.cuda import conv as gconv
    from npar.cuda import elementwise as gew
    from npar.cuda import linalg as glin
    from npar.cuda import models as gmodels
    from npar.cuda import softmax as gsoftmax
    from npar.ops import activations, conv1d, conv2d, dense, onehot_conv1d, softmax
    from npar.ops.masks import causal_mask

    def dev(a):
        return cuda.to_device(np.ascontiguousarray(a))

    def host(a):
        return a.copy_to_host()

    errors = {}
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        worst = {}

        def record(label, got, expected, worst=worst):
            worst[label] = max(worst.get(label, 0.0), relative_error(got, expected))

        def normal(*shape, dtype=dtype):
            return rng.standard_normal(shape).astype(dtype)

        a, b = normal(70, 90), normal(90, 50)
        for ta in (False, True):
            for tb in (False, True):
                out = glin.matmul(dev(a.T.copy() if ta else a),
                                  dev(b.T.copy() if tb else b), ta, tb)
                record("matmul", host(out), a @ b)

        x, w, bias = normal(8, 16, 28, 28), normal(32, 16, 2, 3), normal(32)
        mask = causal_mask(w.shape, "B")
        y, cache = conv2d.conv2d_forward(x, w, bias, (1, 0, 2, 1), (1, 2), mask)
        yd, cache_d = gconv.conv2d_forward(dev(x), dev(w), dev(bias), (1, 0, 2, 1),
                                           (1, 2), mask)
        record("conv2d", host(yd), y)
        dy = normal(*y.shape)
        for got, expected in zip(gconv.conv2d_backward(dev(dy), cache_d),
                                 conv2d.conv2d_backward(dy, cache)):
            record("conv2d backward", host(got), expected)

        x, w, bias = normal(4, 32, 512), normal(64, 32, 2), normal(64)
        y, cache = conv1d.conv1d_forward(x, w, bias, 8)
        yd, cache_d = gconv.conv1d_forward(dev(x), dev(w), dev(bias), 8)
        record("conv1d", host(yd), y)
        dy = normal(*y.shape)
        for got, expected in zip(gconv.conv1d_backward(dev(dy), cache_d),
                                 conv1d.conv1d_backward(dy, cache)):
            record("conv1d backward", host(got), expected)

        x, w, bias = normal(1000, 64), normal(256, 64), normal(256)
        y, cache = dense.dense_forward(x, w, bias)
        yd, cache_d = gconv.dense_forward(dev(x), dev(w), dev(bias))
        record("dense", host(yd), y)
        dy = normal(*y.shape)
        for got, expected in zip(gconv.dense_backward(dev(dy), cache_d),
                                 dense.dense_backward(dy, cache)):
            record("dense backward", host(got), expected)

        x = normal(64, 8, 28, 28)
        y, cache = activations.gate_forward(x, axis=0)
        yd, cache_d = gew.gate_forward(dev(x), axis=0)
        record("gate", host(yd), y)
        dy = normal(*y.shape)
        record("gate backward", host(gew.gate_backward(dev(dy), cache_d)),
               activations.gate_backward(dy, cache))
        y, cache = activations.relu_forward(x)
        yd, cache_d = gew.relu_forward(dev(x))
        record("relu", host(yd), y)
        dy = normal(*x.shape)
        record("relu backward", host(gew.relu_backward(dev(dy), cache_d)),
               activations.relu_backward(dy, cache))

        logits, targets = 5 * normal(3000, 256), rng.integers(0, 256, 3000)
        nll, cache = softmax.softmax_cross_entropy_forward(logits, targets)
        nll_d, cache_d = gsoftmax.softmax_cross_entropy_forward(dev(logits), targets)
        record("softmax cross-entropy", host(nll_d), nll)
        dnll = normal(3000)
        record("softmax cross-entropy backward",
               host(gsoftmax.softmax_cross_entropy_backward(dev(dnll), cache_d)),
               softmax.softmax_cross_entropy_backward(dnll, cache))

        q = rng.integers(0, 256, (4, 512))
        w, b32 = normal(32, 256, 2), normal(32)
        y, cache = onehot_conv1d.onehot_conv1d_forward(q, w, b32, 1)
        yd, cache_d = gmodels.onehot_conv1d_forward(dev(q), dev(w), dev(b32), 1)
        record("one-hot conv1d", host(yd), y)
        dy = normal(*y.shape)
        for got, expected in zip(gmodels.onehot_conv1d_backward(dev(dy), cache_d),
                                 onehot_conv1d.onehot_conv1d_backward(dy, cache)):
            record("one-hot conv1d backward", host(got), expected)
        errors[name] = worst
    return errors


def gpu_section(args):
    from numba import cuda

    from npar.cuda import CudaTrainer, describe, launch_plan

    RESULT["gpu"] = True
    RESULT["device"] = describe()
    RESULT["launch_plan"] = launch_plan().__dict__
    say(f"== GPU: {describe()}")

    say("== kernel checks (CUDA vs CPU)")
    start = time.perf_counter()
    errors = kernel_checks(np.random.default_rng(1))
    tolerance = {"float32": 1e-5, "float64": 1e-12}
    failed = [f"{dtype} {name}: {err:.2e}" for dtype, table in errors.items()
              for name, err in table.items() if not err <= tolerance[dtype]]
    RESULT["kernel_errors"] = errors
    RESULT["kernels_ok"] = not failed
    RESULT["kernel_check_s"] = time.perf_counter() - start
    say("all kernels agree" if not failed else f"MISMATCH: {failed}")

    say("== training steps (CUDA vs CPU)")
    training = {}
    for kind, batch_size, length in (("gated_pixelcnn", args.image_batch, None),
                                     ("wavenet", args.audio_batch, args.crop)):
        data = batches(kind, args.repeats + 1, batch_size, length, seed=5)
        cpu_losses, _ = cpu_steps(make_model(kind), Adam(1e-3), data[:3])
        trainer = CudaTrainer(make_model(kind), Adam(1e-3))
        gpu_losses, seconds = [], []
        for batch in data:
            start = time.perf_counter()
            loss, _ = trainer.step(batch, lr=1e-3, clip_norm=1.0)
            cuda.synchronize()
            seconds.append(time.perf_counter() - start)
            gpu_losses.append(loss)
        worst = max(abs(g - c) / abs(c) for g, c in zip(gpu_losses, cpu_losses))
        step = float(np.median(seconds[1:]))
        cpu_step = RESULT["cpu"][kind]["cpu_step_s"]
        training[kind] = {
            "cuda_step_s": step, "cpu_step_s": cpu_step,
            "speedup": cpu_step / step if step > 0 else math.inf,
            "first_step_with_compile_s": seconds[0],
            "loss_rel_error_3_steps": worst, "losses_ok": worst <= 1e-4,
            "cuda_losses": gpu_losses[:3], "cpu_losses": cpu_losses}
        say(f"{kind}: CUDA {step * 1e3:.1f} ms, CPU {cpu_step * 1e3:.1f} ms per "
            f"step; loss difference {worst:.1e}")
    RESULT["training"] = training


def main():
    parser = argparse.ArgumentParser(description="CUDA target: checks and speed")
    parser.add_argument("--quick", action="store_true",
                        help="smaller batches and fewer repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed steps after the first (default 5, quick 2)")
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.image_batch = 8 if args.quick else 32
    args.audio_batch = 2 if args.quick else 4
    # The default WaveNet's loss starts at its receptive field (1026 samples).
    args.crop = 1536 if args.quick else 2048
    args.images = 1 if args.quick else 4
    args.samples = 1000 if args.quick else 4000
    RESULT["options"] = {k: v for k, v in vars(args).items()}
    started = time.perf_counter()

    time_cpu(args)

    from npar.cuda import describe, simulator_enabled
    from npar.cuda.runtime import available

    if simulator_enabled() or not available():
        reason = ("NUMBA_ENABLE_CUDASIM=1: the simulator is for the tests "
                  "(tests/test_cuda.py), not for timing" if simulator_enabled()
                  else describe())
        RESULT["reason"] = f"no GPU: {reason}"
        say(f"== stopping here: the rest needs a GPU ({reason})")
        RESULT["total_s"] = time.perf_counter() - started
        finish(0)

    gpu_section(args)
    RESULT["total_s"] = time.perf_counter() - started
    ok = RESULT["kernels_ok"] and all(t["losses_ok"] for t in
                                      RESULT["training"].values())
    RESULT["ok"] = ok
    finish(0 if ok else 1)


if __name__ == "__main__":
    main()
