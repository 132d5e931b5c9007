"""Saving and loading models: one ``.npz`` file with the parameters, the
config and the model kind, written atomically.

The file holds one array per parameter, under its npar name (``l0.v.w``
...), and a JSON string ``__npar__`` with ``{"kind", "config", "format"}``;
training checkpoints add optimizer state and progress under names that
start with ``__`` (see :mod:`npar.train.checkpoint`).
"""

import json
import os
import tempfile

import numpy as np

FORMAT_VERSION = 1
_REGISTRY = {}


def register(cls):
    """Class decorator: make ``cls`` loadable by its ``kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def model_class(kind):
    """The model class registered under ``kind``."""
    _import_models()
    if kind not in _REGISTRY:
        raise ValueError(
            f"unknown model kind {kind!r}; known kinds: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[kind]


def _import_models():
    # Importing the model modules registers their classes.
    import npar.models.pixelcnn  # noqa: F401

    try:
        import npar.models.wavenet  # noqa: F401
    except ImportError:  # the WaveNet module may be absent in a partial tree
        pass


def atomic_write(path, write, suffix=""):
    """Write a file atomically: ``write(handle)`` fills a temporary file (a
    binary handle) in the same folder, which is flushed, fsynced and renamed
    over ``path``. A crash or a failed ``write`` leaves the old file or
    nothing, and never the temporary file; an ``OSError`` (a full disk, say)
    is raised again naming ``path``. Checkpoints, metrics and pictures are
    all written this way."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        # mkstemp makes the file private (0600); give it the permissions of a
        # file opened normally (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):  # a full disk, say: name the file
            kept = "the previous file is kept" if os.path.exists(path) else (
                "nothing was written")
            raise OSError(error.errno, f"could not write {path} ({kept}): "
                          f"{error.strerror or error}") from error
        raise


def atomic_write_npz(path, arrays):
    """Write ``arrays`` (a dict) to ``path`` as ``.npz`` with
    :func:`atomic_write`."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays), suffix=".npz")


def model_arrays(model):
    """The arrays that describe ``model``: parameters plus ``__npar__``."""
    header = {"kind": model.kind, "config": model.config, "format": FORMAT_VERSION}
    arrays = {name: value for name, value in model.params.items()}
    arrays["__npar__"] = np.array(json.dumps(header))
    return arrays


def save(model, path):
    """Save ``model`` (parameters, config, kind) to ``path`` atomically."""
    atomic_write_npz(path, model_arrays(model))


def read_npz(path):
    """All arrays of an npar ``.npz`` file, with clear errors for files that
    are missing, truncated or not npar's."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError, OSError ...
        raise ValueError(
            f"{path} is not a readable npar checkpoint (.npz): {error}"
        ) from error
    if "__npar__" not in arrays:
        raise ValueError(
            f"{path} has no '__npar__' header: it was not written by npar.save "
            "or a training run (for foreign weights see npar.verify.interop)"
        )
    return arrays


def header_of(arrays, path="<arrays>"):
    """The ``{"kind", "config", "format"}`` header of a checkpoint."""
    try:
        header = json.loads(str(arrays["__npar__"]))
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has a damaged '__npar__' header") from error
    if not (isinstance(header, dict) and isinstance(header.get("kind"), str)
            and isinstance(header.get("config"), dict)):
        raise ValueError(
            f"{path} has a damaged '__npar__' header: expected a JSON object "
            f"with a string 'kind' and an object 'config', got {header!r:.200}"
        )
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {header.get('format')!r}; this npar "
            f"reads format {FORMAT_VERSION}"
        )
    return header


def load(path, kind=None):
    """Load a model saved by :func:`save` or a training checkpoint.

    Args:
        path: the ``.npz`` file.
        kind: if given, the model kind that the file must hold (for example
            ``"gated_pixelcnn"`` or ``"wavenet"``); another kind is an error.

    Returns:
        the model, with float32 (or as saved) parameters.
    """
    return model_from_arrays(read_npz(path), path, kind)


def model_from_arrays(arrays, path="<arrays>", kind=None):
    """The model held by the arrays of an npar file (see :func:`read_npz`).

    Every parameter must be a finite float32 or float64 array; ``kind``, if
    given, is the model kind the file must hold. Errors name ``path``.
    """
    header = header_of(arrays, path)
    if kind is not None and header["kind"] != kind:
        raise ValueError(
            f"{path} holds a {header['kind']!r} model, expected {kind!r}"
        )
    cls = model_class(header["kind"])
    params = {k: v for k, v in arrays.items() if not k.startswith("__")}
    for name, value in params.items():
        if value.dtype not in (np.float32, np.float64):
            raise ValueError(
                f"{path}: parameter {name} has dtype {value.dtype}, expected "
                "float32 or float64"
            )
        bad = np.count_nonzero(~np.isfinite(value))
        if bad:
            raise ValueError(
                f"{path}: parameter {name} holds {bad} NaN or infinite "
                "value(s); the file is damaged or was saved from a diverged model"
            )
    try:
        return cls(header["config"], params=params)
    except KeyError as error:
        raise ValueError(
            f"{path}: the config of the {header['kind']!r} model lacks the key "
            f"{error}; config {header['config']}"
        ) from error
