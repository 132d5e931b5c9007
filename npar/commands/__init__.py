"""Sub-commands of the ``npar`` command line; see :mod:`npar.cli`.

This module holds the checks of option values that several commands share.
"""

import json
import math


def check_positive(options, keys, integer=True, allow_zero=False):
    """Raise ValueError naming the option (``--batch-size``) unless each of
    ``options[key]`` that is not None is a finite number > 0 (>= 0 with
    ``allow_zero``), and an integer when ``integer``."""
    for key in keys:
        value = options.get(key)
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        rule = ">= 0" if allow_zero else ">= 1" if integer else "> 0"
        kind = "an integer" if integer else "a finite number"
        ok = (isinstance(value, int) if integer else
              isinstance(value, (int, float)) and math.isfinite(value))
        if not ok or value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"{flag} must be {kind} {rule}, got {value!r}")


def check_resume_options(args, saved, keys, checkpoint_path):
    """On ``--resume``, refuse options given on the command line that differ
    from those the run was started with (they would be ignored)."""
    changed = []
    for key in keys:
        value = getattr(args, key, None)
        if value is not None and value != saved.get(key):
            flag = "--" + key.replace("_", "-")
            changed.append(f"{flag} {value!r} (the run has {saved.get(key)!r})")
    if changed:
        raise ValueError(
            f"--resume continues {checkpoint_path} with its saved options; "
            f"these differ: {', '.join(changed)}. Drop them, or start a new run "
            "in another --out")


def write_json_atomic(data, path):
    """Write ``data`` as JSON to ``path`` with
    :func:`npar.models.io.atomic_write`: a reader sees the old file or the
    new one, never half of one, and a failed write leaves no temporary
    file behind."""
    from npar.models.io import atomic_write

    text = json.dumps(data, indent=2)  # fails before anything is written
    atomic_write(path, lambda handle: handle.write(text.encode()), suffix=".json")
