"""``npar train pixelcnn``: a (Gated) PixelCNN on MNIST.

Writes ``OUT/checkpoint.npz`` (model, optimizer, progress), ``OUT/metrics.json``
and ``OUT/samples.png``. The defaults are the project's main job: a Gated
PixelCNN trained for 12 minutes on a 2-core CPU, then evaluated on the full
10,000-image test set.
"""

import logging
import math
import os
import time

import numpy as np

from npar.backend import add_device_argument, make_trainer
from npar.commands import (
    check_positive,
    check_resume_options,
    write_json_atomic,
)
from npar.data.mnist import central_crop, load_mnist, quantize
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.train.checkpoint import load_checkpoint
from npar.train.loop import evaluate_nll, fit
from npar.train.optim import make_optimizer

log = logging.getLogger(__name__)

MNIST_SIZE = 28

DEFAULTS = dict(model="gated", channels=None, layers=None, kernel=None,
                first_kernel=None, head_channels=None, batch_size=32, lr=3e-3,
                optimizer="adam", clip=1.0, schedule="cosine", time_budget=720.0,
                conditional=False, crop=None, levels=None, embedding=None)


def add_parser(families):
    p = families.add_parser(
        "pixelcnn", help="train a (Gated) PixelCNN on MNIST",
        description="Train a PixelCNN on MNIST; write checkpoint.npz, "
        "metrics.json and samples.png into --out.")
    p.add_argument("--model", choices=["gated", "plain"],
                   help="Gated PixelCNN (default) or the plain masked PixelCNN")
    p.add_argument("--channels", type=int, help="hidden channels (default 32)")
    p.add_argument("--layers", type=int, help="number of layers")
    p.add_argument("--kernel", type=int, help="odd kernel size of later layers")
    p.add_argument("--first-kernel", type=int, help="odd kernel of layer 1")
    p.add_argument("--head-channels", type=int, help="channels of the output head")
    p.add_argument("--embedding", type=int,
                   help="D: also feed the first layer a learned D-vector per "
                   "input level (0 = none, the default)")
    p.add_argument("--conditional", action="store_true", default=None,
                   help="class-conditional Gated PixelCNN: the MNIST label adds a "
                   "learned bias inside every gate")
    p.add_argument("--batch-size", type=int, help="images per step (default 32)")
    p.add_argument("--lr", type=float, help="learning rate (default 3e-3)")
    p.add_argument("--optimizer", choices=["adam", "sgd"])
    p.add_argument("--clip", type=float, help="global gradient-norm clip, 0 = off")
    p.add_argument("--schedule", choices=["cosine", "constant"],
                   help="learning-rate schedule over the run (default cosine)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--epochs", type=float, help="passes over the 60,000 images")
    stop.add_argument("--max-steps", type=int, help="optimizer steps in all")
    stop.add_argument("--time-budget", type=float,
                      help="seconds of training in all (default 720)")
    p.add_argument("--seed", type=int,
                   help="seed of init and batches (default 0)")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files")
    p.add_argument("--out", default="runs/pixelcnn", help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped")
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on the first N test images only (default all)")
    p.add_argument("--samples", type=int, default=16,
                   help="digits to generate into samples.png (0 = none)")
    p.add_argument("--crop", type=int,
                   help="train and test on the central CROP x CROP pixels of "
                   "each image (a small, fast setting for smoke tests; default: "
                   "the whole 28 x 28)")
    p.add_argument("--levels", type=int,
                   help="intensity levels V in 2..256: the images are reduced to "
                   "floor(x V / 256) (2 = binarised MNIST; default 256)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_argument(p)
    return p


def _resolve_options(args):
    options = dict(DEFAULTS)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    return options


def _build_model(options, seed):
    cls = GatedPixelCNN if options["model"] == "gated" else PixelCNN
    config = cls.default_config()
    for key in ("channels", "layers", "kernel", "first_kernel", "head_channels",
                "embedding"):
        if options.get(key) is not None:
            config[key] = options[key]
    if options.get("levels") is not None:
        config["levels"] = options["levels"]
    if options.get("crop") is not None:
        # Recorded with the model, so that npar eval and npar sample use the
        # same image size.
        config["image_size"] = [options["crop"], options["crop"]]
    if options.get("conditional"):
        if cls is not GatedPixelCNN:
            raise ValueError("--conditional needs the Gated PixelCNN (--model gated)")
        config["classes"] = 10
    return cls(config, seed=seed)


def make_batch_fn(images, batch_size, seed, labels=None):
    """``batch_fn(step)``: the images of step ``step``, a pure function of
    ``(seed, step)``: each epoch draws a fresh permutation from
    ``default_rng([seed, epoch])`` and takes consecutive slices of it."""
    n_images = len(images)
    steps_per_epoch = n_images // batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch size {batch_size} exceeds the {n_images} training images")

    def batch_fn(step):
        epoch, index = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n_images)
        chosen = order[index * batch_size:(index + 1) * batch_size]
        if labels is None:
            return (images[chosen],)
        # loss_and_grads(x, params=None, labels=None), positionally.
        return (images[chosen], None, labels[chosen])

    return batch_fn, steps_per_epoch


def run(args):
    wall_start = time.perf_counter()
    out = args.out
    checkpoint_path = os.path.join(out, "checkpoint.npz")
    given = vars(args)
    if args.levels is not None and not 2 <= args.levels <= 256:
        raise ValueError(f"--levels must lie in 2..256, got {args.levels}")
    if args.crop is not None and not 1 <= args.crop <= MNIST_SIZE:
        raise ValueError(
            f"--crop must lie in 1..{MNIST_SIZE} for {MNIST_SIZE}x{MNIST_SIZE} "
            f"MNIST images, got {args.crop}")
    check_positive(given, ("batch_size", "channels", "layers", "kernel",
                           "first_kernel", "head_channels", "max_steps",
                           "test_limit"))
    check_positive(given, ("seed", "samples", "embedding"), allow_zero=True)
    check_positive(given, ("epochs", "time_budget"), integer=False)
    check_positive(given, ("clip",), integer=False, allow_zero=True)
    os.makedirs(out, exist_ok=True)

    if args.resume:
        if not os.path.exists(checkpoint_path):
            raise FileNotFoundError(
                f"--resume: no checkpoint at {checkpoint_path}; run without "
                "--resume to start")
        saved_options = None
        options = None
    train_images, train_labels = load_mnist("train", args.data_dir)
    test_images, test_labels = load_mnist("test", args.data_dir)

    if args.resume:
        model, state = load_checkpoint(checkpoint_path)
        saved_options = state.get("options")
        if saved_options is None:
            raise ValueError(f"{checkpoint_path} holds no training options")
        if model.kind not in ("gated_pixelcnn", "pixelcnn"):
            raise ValueError(
                f"--resume: {checkpoint_path} holds a {model.kind!r} model, not a "
                "PixelCNN (resume it with its own npar train command)")
        # An option left to its default is saved as None; compare what the
        # run really used, so that giving the default explicitly is no change.
        used = {**saved_options, "seed": state.get("seed")}
        for key in ("channels", "layers", "kernel", "first_kernel",
                    "head_channels", "levels", "embedding"):
            if used.get(key) is None:
                used[key] = model.config.get(key, 0 if key == "embedding" else None)
        if used.get("crop") is None:
            used["crop"] = MNIST_SIZE
        check_resume_options(
            args, used,
            [key for key in DEFAULTS if key != "time_budget"] + ["seed"],
            checkpoint_path)
        options = dict(saved_options)
        if args.test_limit is not None:
            options["test_limit"] = args.test_limit
        for key in ("epochs", "max_steps", "time_budget"):
            if getattr(args, key, None) is not None:
                options.update(epochs=None, max_steps=None, time_budget=None)
                options[key] = getattr(args, key)
        optimizer = make_optimizer(options["optimizer"], options["lr"])
        model, state = load_checkpoint(checkpoint_path, optimizer)
        seed = state["seed"]
        log.info("resuming %s at step %d", checkpoint_path, state["step"])
    else:
        options = _resolve_options(args)
        options.setdefault("epochs", None)
        options.setdefault("max_steps", None)
        if args.epochs is not None or args.max_steps is not None:
            options["time_budget"] = None
        options["epochs"] = args.epochs
        options["max_steps"] = args.max_steps
        options["test_limit"] = args.test_limit
        seed = 0 if args.seed is None else args.seed
        model = _build_model(options, seed)
        optimizer = make_optimizer(options["optimizer"], options["lr"])
        state = {"seed": seed, "options": options}

    crop = options.get("crop")
    train_images = central_crop(train_images, crop)
    test_images = central_crop(test_images, crop)
    train_images = quantize(train_images, model.levels)
    test_images = quantize(test_images, model.levels)
    conditional = bool(options.get("conditional"))
    batch_fn, steps_per_epoch = make_batch_fn(
        train_images, options["batch_size"], seed,
        train_labels if conditional else None)
    max_steps = options.get("max_steps")
    if options.get("epochs") is not None:
        max_steps = int(math.ceil(options["epochs"] * steps_per_epoch))
    log.info("%s with %d parameters, config %s", model.kind, model.n_params(),
             model.config)

    trainer = make_trainer(model, optimizer, device=args.device)
    state = fit(model, optimizer, batch_fn, max_steps=max_steps, trainer=trainer,
                time_budget=options.get("time_budget"),
                clip_norm=options["clip"] or None, schedule=options["schedule"],
                warmup_fraction=0.02, checkpoint_path=checkpoint_path,
                state=state, progress=not args.no_progress,
                items_per_batch=options["batch_size"])

    test_limit = options.get("test_limit")
    test = test_images if test_limit is None else test_images[:test_limit]
    dims = test[0].size
    if conditional:
        # Batches of test indices, so that images and labels stay paired.
        nll = evaluate_nll(lambda index: model.nll_sum(test[index],
                                                       test_labels[index]),
                           np.arange(len(test)), batch_size=250,
                           progress=not args.no_progress, desc="test")
    else:
        nll = evaluate_nll(model.nll_sum, test, batch_size=250,
                           progress=not args.no_progress, desc="test")
    test_bpd = nll / (len(test) * dims * math.log(2))
    recent = state["losses"][-100:]
    metrics = {
        "model": model.kind,
        "config": model.config,
        "params": model.n_params(),
        "steps": state["step"],
        "epochs": state["step"] / steps_per_epoch,
        "train_seconds": state["elapsed"],
        "images_per_s": state["step"] * options["batch_size"] / max(
            state["elapsed"], 1e-9),
        "train_bpd": float(np.mean(recent)) / math.log(2) if recent else None,
        "train_bpd_note": "mean training loss over the last 100 steps",
        "test_bpd": test_bpd,
        "test_images": len(test),
        "stopped": state["stopped"],
        "seed": seed,
        "options": options,
    }
    metrics["wall_s"] = time.perf_counter() - wall_start
    write_json_atomic(metrics, os.path.join(out, "metrics.json"))
    if args.samples > 0 and state["stopped"] != "interrupted":
        metrics["samples_png"] = _write_samples(model, args.samples, seed, out)
        metrics["wall_s"] = time.perf_counter() - wall_start
        write_json_atomic(metrics, os.path.join(out, "metrics.json"))
    over = "" if model.levels == 256 else f" over {model.levels} levels"
    print(f"test bits/dim {test_bpd:.4f}{over} on {len(test)} images; "
          f"train bits/dim {metrics['train_bpd']:.4f}; {state['step']} steps, "
          f"{metrics['images_per_s']:.0f} images/s; {metrics['wall_s']:.0f} s; "
          f"wrote {out}")
    return 0


def _write_samples(model, n, seed, out):
    from npar.sampling.images import save_grid
    from npar.sampling.pixelcnn import sample_images

    labels = np.arange(n) % model.config["classes"] if model.config.get(
        "classes") else None
    # At the size in the model's config (the --crop of the run, if any).
    images = sample_images(model, n, np.random.default_rng(seed), labels=labels)
    path = os.path.join(out, "samples.png")
    save_grid(images, path, scale=2, levels=model.levels)
    return path
