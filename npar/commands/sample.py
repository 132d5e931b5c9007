"""``npar sample CKPT``: draw images from a (Gated) PixelCNN into a PNG grid."""

import os
import time

import numpy as np

from npar.commands import check_positive
from npar.models.io import load
from npar.sampling.images import save_grid, save_growth_strip
from npar.sampling.pixelcnn import ENGINES, generate, image_size
from npar.sampling.strategies import check_guidance


def add_parser(subparsers):
    p = subparsers.add_parser(
        "sample", help="draw images from a PixelCNN checkpoint into a PNG",
        description="Draw images from a (Gated) PixelCNN checkpoint in raster "
        "order and write them as a PNG grid. Temperature, top-k and top-p "
        "shape each draw; the cached engine computes each layer once per "
        "pixel, the naive one runs the whole model for every pixel.")
    p.add_argument("checkpoint", help="checkpoint.npz or a saved model")
    p.add_argument("--n", type=int, default=16,
                   help="images (per class with --grid-per-class; default 16)")
    p.add_argument("--out", default="samples.png", help="PNG file to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature, 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, default=None,
                   help="keep the k most probable levels of each draw")
    p.add_argument("--top-p", type=float, default=None,
                   help="keep the smallest set of levels whose probability "
                   "reaches p (nucleus)")
    p.add_argument("--engine", choices=ENGINES, default="cached",
                   help="cached (default) or naive generation")
    p.add_argument("--class", dest="label", type=int, default=None,
                   help="class of every image (class-conditional models)")
    p.add_argument("--grid-per-class", action="store_true",
                   help="one row of --n images for each class (class-conditional "
                   "models)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="guide a class-conditional model by an unconditional one "
                   "(--unconditional): draw from w log p(.|class) + (1 - w) "
                   "log p(.); 1 is the conditional model alone; on MNIST digits 2 "
                   "showed the class best (docs/sampling.md)")
    p.add_argument("--unconditional", default=None, metavar="CKPT",
                   help="unconditional PixelCNN checkpoint for --guidance")
    p.add_argument("--steps-png", default=None,
                   help="also write the raster-order growth of the first image")
    p.add_argument("--steps-every", type=int, default=None,
                   help="sub-pixels between frames of --steps-png (default two "
                   "rows)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="image size (default: the size the model was trained "
                   "on, from its config's image_size, else 28 28)")
    p.add_argument("--scale", type=int, default=2,
                   help="integer upscaling of the PNG (default 2)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _labels(model, args):
    # (labels, columns of the grid) from --class / --grid-per-class.
    classes = model.config.get("classes", 0)
    if (args.label is not None or args.grid_per_class) and not classes:
        raise ValueError(
            f"{args.checkpoint} holds an unconditional {model.kind}: --class and "
            "--grid-per-class need a class-conditional model (trained with "
            "--conditional)")
    if args.label is not None and args.grid_per_class:
        raise ValueError("give --class or --grid-per-class, not both")
    if args.grid_per_class:
        return np.repeat(np.arange(classes), args.n), args.n
    if args.label is not None:
        if not 0 <= args.label < classes:
            raise ValueError(f"--class must lie in 0..{classes - 1}, got {args.label}")
        return np.full(args.n, args.label), None
    if classes:
        # No class asked for: cycle through the classes.
        return np.arange(args.n) % classes, None
    return None, None


def run(args):
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale}")
    check_positive(vars(args), ("steps_every",))
    check_positive(vars(args), ("seed",), allow_zero=True)
    model = load(args.checkpoint)
    if model.kind not in ("gated_pixelcnn", "pixelcnn"):
        raise ValueError(
            f"npar sample draws images from PixelCNN checkpoints; "
            f"{args.checkpoint} holds a {model.kind!r} model (use npar generate)")
    labels, columns = _labels(model, args)
    for option, path in (("--out", args.out), ("--steps-png", args.steps_png)):
        if path is not None and os.path.isdir(path):
            raise ValueError(f"{option} {path} is a folder; give a PNG file name")
    unconditional = None
    if args.guidance is not None or args.unconditional is not None:
        if args.guidance is None or args.unconditional is None:
            raise ValueError("--guidance and --unconditional go together: give "
                             "both, or neither")
        check_guidance(args.guidance)
        if not model.config.get("classes"):
            raise ValueError(
                f"--guidance needs a class-conditional model; {args.checkpoint} "
                f"holds an unconditional {model.kind}")
        unconditional = load(args.unconditional)
        if unconditional.kind not in ("gated_pixelcnn", "pixelcnn"):
            raise ValueError(
                f"--unconditional {args.unconditional} holds a {unconditional.kind!r} "
                "model, not a PixelCNN")
        if args.size is None and tuple(image_size(unconditional)) != tuple(
                image_size(model)):
            raise ValueError(
                f"--unconditional {args.unconditional} was trained on "
                f"{image_size(unconditional)} images, {args.checkpoint} on "
                f"{image_size(model)}; give --size H W to draw both at one size")
    n_images = args.n if labels is None else len(labels)
    height, width = args.size or image_size(model)
    snapshot_every = None
    if args.steps_png:
        snapshot_every = args.steps_every or 2 * width * model.image_channels

    start = time.perf_counter()
    run_ = generate(model, n_images, np.random.default_rng(args.seed),
                    size=(height, width), engine=args.engine,
                    temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, labels=labels,
                    snapshot_every=snapshot_every, progress=not args.no_progress,
                    guidance=args.guidance, unconditional=unconditional)
    seconds = time.perf_counter() - start

    save_grid(run_.images, args.out, columns=columns, scale=args.scale,
              levels=model.levels)
    guided = "" if args.guidance is None else f", guidance {args.guidance:g}"
    print(f"wrote {args.out}: {n_images} images of {height}x{width} in "
          f"{seconds:.2f} s ({args.engine} engine{guided})")
    if args.steps_png:
        save_growth_strip(run_.snapshots, run_.snapshot_steps, args.steps_png,
                          scale=args.scale, levels=model.levels)
        print(f"wrote {args.steps_png}: {len(run_.snapshot_steps)} frames, one "
              f"every {snapshot_every} sub-pixels")
    return 0
