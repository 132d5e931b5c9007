"""``npar train pixelcnn|wavenet``: train a model, write checkpoint and metrics."""

import importlib

FAMILIES = ("train_pixelcnn", "train_wavenet")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="train a PixelCNN on MNIST or a WaveNet on speech",
        description="Train a model. See 'npar train pixelcnn -h' and "
        "'npar train wavenet -h'.")
    families = parser.add_subparsers(dest="family", metavar="MODEL")
    for name in FAMILIES:
        try:
            module = importlib.import_module(f"npar.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"npar.commands.{name}":
                raise
            continue
        sub = module.add_parser(families)
        sub.set_defaults(_family_run=module.run)
    parser.set_defaults(_family_run=None, _train_parser=parser)
    return parser


def run(args):
    if args._family_run is None:
        args._train_parser.print_help()
        return 2
    return args._family_run(args)
