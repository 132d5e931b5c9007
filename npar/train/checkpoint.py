"""Training checkpoints: the model file of :mod:`npar.models.io` plus the
optimizer state and the run's progress, written atomically (temporary file,
fsync, rename), so an interrupted run keeps its last good checkpoint and
``--resume`` continues exactly where it stopped.

Extra keys: ``__opt__.<state name>`` for the optimizer, ``__train__`` for a
JSON object with the step, elapsed time, options and loss history.
"""

import json

import numpy as np

from npar.models.io import (
    atomic_write_npz,
    model_arrays,
    model_from_arrays,
    read_npz,
)


def save_checkpoint(path, model, optimizer=None, state=None):
    """Write model, optimizer state and ``state`` (JSON-able dict) to ``path``."""
    arrays = model_arrays(model)
    if optimizer is not None:
        arrays["__opt__.__name__"] = np.array(optimizer.name)
        for key, value in optimizer.state_arrays().items():
            arrays[f"__opt__.{key}"] = value
    arrays["__train__"] = np.array(json.dumps(state or {}))
    atomic_write_npz(path, arrays)


def load_checkpoint(path, optimizer=None, kind=None):
    """Read a checkpoint back.

    Args:
        path: the ``.npz`` file.
        optimizer: if given, its state is restored from the file (its kind
            must match the one saved).
        kind: if given, the model kind the file must hold.

    Returns:
        ``(model, state)``: the model and the saved progress dict.
    """
    arrays = read_npz(path)
    model = model_from_arrays(arrays, path, kind)
    state = json.loads(str(arrays["__train__"])) if "__train__" in arrays else {}
    if optimizer is not None:
        saved = str(arrays.get("__opt__.__name__", ""))
        if saved != optimizer.name:
            raise ValueError(
                f"{path} holds {saved or 'no'} optimizer state, the run asks for "
                f"{optimizer.name!r}"
            )
        optimizer.load_state_arrays({
            k[len("__opt__."):]: v for k, v in arrays.items()
            if k.startswith("__opt__.") and k != "__opt__.__name__"})
    return model, state
