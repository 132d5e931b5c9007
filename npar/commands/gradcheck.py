"""``npar gradcheck [NAME ...|all]``: check every hand-written backward pass
against float64 centred differences (see :mod:`npar.verify.gradcheck`)."""

import time

from npar.verify.checks import CHECKS, run_check


def add_parser(subparsers):
    p = subparsers.add_parser(
        "gradcheck", help="check backward passes against finite differences",
        description="Run the registered gradient checks (kernels, layers, whole "
        "models) in float64 and print the largest relative error of every "
        "input and parameter. A NAME also selects the checks under it "
        "(conv2d runs conv2d.mask_a, conv2d.mask_b, ...). Exits 1 if any "
        "check fails.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="checks to run, or 'all' (the default)")
    p.add_argument("--list", action="store_true",
                   help="list the checks and what each one covers")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the inputs, parameters and directions")
    p.add_argument("--eps", type=float, default=1e-6,
                   help="step of the centred differences (default 1e-6)")
    p.add_argument("--tolerance", type=float, default=1e-6,
                   help="largest accepted relative error (default 1e-6)")
    p.add_argument("--details", action="store_true",
                   help="print each check's own table (worst entries, floors)")
    return p


def select(names):
    """The registered check names that ``names`` select, in registry order."""
    if not names or "all" in names:
        return list(CHECKS)
    chosen = []
    for name in names:
        matches = [c for c in CHECKS if c == name or c.startswith(name + ".")]
        if not matches:
            raise ValueError(
                f"unknown gradient check {name!r}; known checks: "
                f"{', '.join(CHECKS)} (or 'all')"
            )
        chosen.extend(c for c in matches if c not in chosen)
    return chosen


def _table(lines):
    widths = [max(len(line[k]) for line in lines) for k in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths))
                     .rstrip() for line in lines)


def run(args):
    if args.list:
        width = max(len(name) for name in CHECKS)
        for name, check in CHECKS.items():
            print(f"{name.ljust(width)}  {check.description}")
        return 0
    names = select(args.names)

    start = time.perf_counter()
    lines = [("check", "tensor", "shape", "method", "max rel error", "result")]
    reports = []
    for name in names:
        report = run_check(name, seed=args.seed, eps=args.eps,
                           tolerance=args.tolerance)
        reports.append(report)
        for row in report.rows:
            result = "FAIL" if not row.passed else "ok"
            if row.kink_crossings:
                result = "KINK"
            elif row.zero:
                result = "ok (zero)"
            lines.append((name, row.name, str(row.shape), row.method,
                          f"{row.max_rel_error:.2e}", result))
        if args.details:
            print(report.table())
            print()
    elapsed = time.perf_counter() - start

    print(_table(lines))
    print()
    failed = [r for r in reports if not r.ok]
    for report in failed:
        print(report.summary())
    n_tensors = sum(len(r.rows) for r in reports)
    worst = max((row.max_rel_error for r in reports for row in r.rows),
                default=0.0)
    zero = [f"{r.title}:{name}" for r in reports for name in r.vacuous]
    if zero:
        print(f"warning: zero gradient, nothing checked: {', '.join(zero)}")
    verdict = (f"{len(failed)} of {len(reports)} checks FAILED" if failed
               else "all passed")
    print(f"{len(reports)} checks, {n_tensors} tensors: {verdict}; largest "
          f"relative error {worst:.1e} (tolerance {args.tolerance:.0e}); "
          f"{elapsed:.1f} s")
    return 1 if failed else 0
