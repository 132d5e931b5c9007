"""``npar export CKPT --to torch|onnx|npz|julia --out FILE``: write a
model's weights for another framework.

- ``torch``: a PyTorch ``state_dict`` (``.pt``, needs torch) with the
  names of :mod:`npar.verify.torch_modules` (table in ``docs/interop.md``);
- ``npz``: the same names and shapes in an ``.npz`` (no torch needed);
- ``onnx``: an ONNX graph of the whole model, masks baked into the
  weights (needs onnx);
- ``julia``: an ``.npz`` for NPZ.jl with every kernel in Julia's
  ``(K_w, K_h, C_in, C_out)`` layout, reversed for Flux/Lux ``Conv`` (true
  convolution) unless ``--cross-correlation``.
"""

import argparse

from npar.models.io import atomic_write_npz, load
from npar.verify import interop

TARGETS = ("torch", "onnx", "npz", "julia")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a model for PyTorch, ONNX, JAX (npz) or Julia",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="npar model or training checkpoint (.npz)")
    parser.add_argument("--to", required=True, choices=TARGETS, dest="target",
                        help="target format (see above)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="file to write (.pt for torch, .onnx, .npz)")
    parser.add_argument("--input", choices=("uint8", "float", "int64"),
                        default="uint8",
                        help="onnx: PixelCNN input x as uint8 levels (scaled in "
                        "the graph) or float32 already scaled to [-1, 1]; "
                        "WaveNet codes as uint8 or int64 (default uint8)")
    parser.add_argument("--opset", type=int, default=17, help="onnx opset")
    parser.add_argument("--cross-correlation", action="store_true",
                        help="julia: do not reverse the kernels (for Flux "
                        "CrossCor or Lux Conv(...; cross_correlation=true))")
    return parser


def run(args):
    model = load(args.checkpoint)
    out = args.out
    if args.target == "torch":
        if not out.endswith(interop.TORCH_SUFFIXES):
            raise ValueError(f"--to torch writes a .pt file, got --out {out!r}")
        interop.save_state_dict(model, out)
    elif args.target == "npz":
        if not out.endswith(".npz"):
            raise ValueError(f"--to npz writes an .npz file, got --out {out!r}")
        interop.save_state_dict(model, out)
    elif args.target == "julia":
        if not out.endswith(".npz"):
            raise ValueError(f"--to julia writes an .npz file, got --out {out!r}")
        atomic_write_npz(out, interop.to_julia(model,
                                               flipped=not args.cross_correlation))
    else:
        from npar.verify.onnx_export import export_onnx

        export_onnx(model, out, input_type=args.input, opset=args.opset)
    print(f"npar export: wrote {args.target} weights of the {model.kind} in "
          f"{args.checkpoint} to {out}")
    return 0
