"""``npar exercise NAME --start PATH | --check PATH | --solution PATH``:
write the backward pass of a layer yourself and have it graded (see
:mod:`npar.exercises`)."""

from npar import exercises


def add_parser(subparsers):
    p = subparsers.add_parser(
        "exercise", help="write a layer's backward pass and have it graded",
        description="Backward-pass exercises. --start writes a file with the "
        "layer's forward pass and a backward pass for you to write; --check "
        "grades your file against float64 centred differences and the "
        "library's own backward pass, naming any wrong gradient. Without a "
        "NAME, lists the exercises.")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help=f"one of: {', '.join(exercises.EXERCISES)}")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--start", metavar="PATH",
                        help="write the starter file to PATH")
    action.add_argument("--check", metavar="PATH",
                        help="grade your solution in PATH")
    action.add_argument("--solution", metavar="PATH",
                        help="write the reference solution (which calls the "
                        "library's backward pass) to PATH")
    p.add_argument("--force", action="store_true",
                   help="overwrite PATH if it exists (--start, --solution)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the graded inputs")
    return p


def _list():
    width = max(len(name) for name in exercises.EXERCISES)
    for name, exercise in exercises.EXERCISES.items():
        print(f"{name.ljust(width)}  {exercise.summary}")
    print("\nstart one with: npar exercise NAME --start my_file.py")


def run(args):
    if args.name is None:
        _list()
        return 0
    exercise = exercises.get(args.name)
    if args.start:
        path = exercises.write_starter(args.name, args.start, args.force)
        print(f"wrote {path}: the forward pass of {args.name} and a backward "
              f"pass for you to write.\nwhen it is done: npar exercise "
              f"{args.name} --check {path}")
        return 0
    if args.solution:
        path = exercises.write_solution(args.name, args.solution, args.force)
        print(f"wrote {path}: the reference solution, which calls "
              f"{exercise.library}")
        return 0
    if args.check:
        report = exercises.grade(args.name, args.check, seed=args.seed)
        print(report.table())
        return 0 if report.ok else 1
    print(f"{args.name}: {exercise.summary}\n"
          f"  npar exercise {args.name} --start my_{args.name}.py   write the "
          "starter file\n"
          f"  npar exercise {args.name} --check my_{args.name}.py   grade it")
    return 0
