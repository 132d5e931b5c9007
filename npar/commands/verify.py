"""``npar verify MODEL REFERENCE``: compare another framework's logits and
gradients with npar's, and judge whether the reference is causal.

MODEL is an npar checkpoint (``npar.save`` or a training run), or a
foreign state_dict (``.npz``, or ``.pt`` with torch installed) under the
PyTorch names of ``docs/interop.md``. REFERENCE is an ``.npz`` with the
other framework's inputs and outputs (keys ``x``, ``logits``, optional
``loss``, ``grad.<name>``, ``causal.x``, ``causal.logits``,
``causal.base``; see ``docs/interop.md``).

Exit status: 0 when every tensor agrees and nothing shows the reference
reading the future, 3 when something differs, 1 on bad input.
"""

import argparse
import json
import os

import numpy as np

from npar.commands import check_positive
from npar.models.io import load, read_npz
from npar.verify import interop

EXIT_DIFFERS = 3


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "verify", help="compare another framework's logits/gradients with npar's",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL",
                        help="npar checkpoint .npz, or a foreign state_dict "
                        ".npz/.pt with PyTorch names")
    parser.add_argument("reference", metavar="REFERENCE",
                        help=".npz with x, logits and optional loss, grad.<name>, "
                        "causal.x, causal.logits, causal.base")
    parser.add_argument("--kind", choices=interop.KINDS,
                        help="model kind of a foreign state_dict (default: "
                        "detected from its names)")
    parser.add_argument("--config", metavar="JSON",
                        help="npar config of a foreign state_dict as JSON "
                        "(default: read from the weight shapes)")
    parser.add_argument("--rtol", type=float,
                        help="tolerance on max|npar - ref| / max|ref| per tensor "
                        "(default 1e-4 for float32, 1e-9 for float64)")
    parser.add_argument("--causal-rtol", type=float,
                        help="a probe logit counts as moved beyond this times "
                        "max(1, max|causal.logits|) (default 1e-5 for float32, "
                        "1e-11 for float64)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the full report as JSON")
    return parser


def load_model(path, kind=None, config=None):
    """An npar model from an npar checkpoint or a foreign state_dict, and the
    mask findings of the foreign file (empty for an npar checkpoint)."""
    is_npar = False
    if not str(path).endswith(interop.TORCH_SUFFIXES):
        try:
            read_npz(path)
            is_npar = True
        except ValueError as error:
            if "__npar__" not in str(error):
                raise
    if is_npar:
        model = load(path)
        if kind is not None and model.kind != kind:
            raise ValueError(f"{path} holds a {model.kind!r} model, not {kind!r}")
        return model, []
    state_dict = interop.load_state_dict(path)
    model = interop.from_state_dict(state_dict, kind=kind, config=config,
                                    check_masks=False)
    return model, interop.mask_findings(model, state_dict)


def run(args):
    check_positive(vars(args), ("rtol", "causal_rtol"), integer=False)
    config = None
    if args.config:
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config is not valid JSON ({error}): "
                             f"{args.config!r}") from error
        if not isinstance(config, dict):
            raise ValueError(f"--config must be a JSON object of config keys, "
                             f"got {args.config!r}")
    model, findings = load_model(args.model, args.kind, config)
    if not os.path.exists(args.reference):
        raise FileNotFoundError(f"no such reference file: {args.reference}")
    try:
        with np.load(args.reference, allow_pickle=False) as data:
            reference = {name: data[name] for name in data.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError, OSError
        raise ValueError(f"{args.reference} is not a readable .npz: {error}") from error

    report = interop.compare_with_reference(model, reference, rtol=args.rtol,
                                            causal_rtol=args.causal_rtol)
    report["model_masks"] = findings
    lines = interop.format_report(report, title=f"npar verify {args.reference}")
    for finding in findings:
        lines.insert(-1, f"MASK IN {args.model}: {finding['foreign']} admits "
                     f"{len(finding['admitted'])} tap(s) npar forbids "
                     f"{finding['admitted'][:4]} and hides {len(finding['hidden'])} "
                     f"npar uses {finding['hidden'][:4]}")
    if findings and report["ok"]:
        report["ok"] = False
        lines[-1] = "verdict: DIFFERS (masks)"
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(interop.report_json(report))
    return 0 if report["ok"] else EXIT_DIFFERS
