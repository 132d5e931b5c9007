"""``npar eval CKPT``: test-set bits/dim of a PixelCNN checkpoint."""

import math

from npar.commands import check_positive
from npar.data.mnist import central_crop, load_mnist, quantize
from npar.models.io import load
from npar.sampling.pixelcnn import DEFAULT_SIZE, image_size
from npar.train.loop import evaluate_nll


def add_parser(subparsers):
    p = subparsers.add_parser("eval", help="print test bits/dim of a checkpoint",
                              description="Evaluate a PixelCNN checkpoint on the "
                              "MNIST test set and print bits per dimension.")
    p.add_argument("checkpoint", help="checkpoint.npz or a saved model")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files")
    p.add_argument("--limit", type=int, help="first N test images only")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args):
    check_positive(vars(args), ("limit", "batch_size"))
    model = load(args.checkpoint)
    if model.kind not in ("gated_pixelcnn", "pixelcnn"):
        raise ValueError(
            f"npar eval evaluates PixelCNN checkpoints on MNIST; "
            f"{args.checkpoint} holds a {model.kind!r} model")
    if model.image_channels != 1 or not 2 <= model.levels <= 256:
        raise ValueError(
            f"npar eval scores MNIST (1 channel, 2..256 levels); {args.checkpoint} "
            f"models {model.image_channels} channel(s) of {model.levels} levels")
    images, labels = load_mnist("test", args.data_dir)
    if args.limit is not None:
        images, labels = images[:args.limit], labels[:args.limit]
    # A model trained with npar train pixelcnn --levels/--crop saw intensities
    # reduced and images cropped the same way; its config records both.
    size = image_size(model)
    images = quantize(central_crop(images, size), model.levels)
    if model.config.get("classes"):
        nll = evaluate_nll(lambda b: model.nll_sum(b[0], b[1]),
                           _Pairs(images, labels), args.batch_size,
                           not args.no_progress)
    else:
        nll = evaluate_nll(model.nll_sum, images, args.batch_size,
                           not args.no_progress)
    bpd = nll / (len(images) * images[0].size * math.log(2))
    over = "" if model.levels == 256 else f" over {model.levels} levels"
    crop = "" if size == DEFAULT_SIZE else f" (central {size[0]}x{size[1]} crops)"
    print(f"test bits/dim {bpd:.4f}{over} on {len(images)} images{crop}")
    return 0


class _Pairs:
    # (images, labels) sliced together, for evaluate_nll.
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]
