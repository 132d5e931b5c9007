"""``python -m npar`` runs the command line."""

from npar.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
