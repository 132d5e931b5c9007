"""Speech audio for WaveNet: WAV files, resampling and mu-law codes.

WAV files are read with :func:`scipy.io.wavfile.read` (8-bit unsigned,
16- and 32-bit signed integers, 32- and 64-bit floats; several channels
are averaged to mono), scaled to ``[-1, 1]`` and resampled with
:func:`scipy.signal.resample_poly`.

Mu-law companding (ITU-T G.711; WaveNet, van den Oord et al. 2016c,
eq. 2 of sec. 2.2) with ``mu = V - 1 = 255`` maps a sample
``x`` in ``[-1, 1]`` to

.. math::  f(x) = \\mathrm{sign}(x)\\,
           \\frac{\\ln(1 + \\mu |x|)}{\\ln(1 + \\mu)} \\in [-1, 1],

and then to one of ``V = 256`` integer codes by rounding to the nearest
level (halves round up):

.. math::  q = \\left\\lfloor \\tfrac{\\mu}{2} (f(x) + 1) + \\tfrac12
           \\right\\rfloor \\in \\{0, \\dots, 255\\}.

Silence ``x = 0`` gives ``f = 0`` and ``q = floor(127.5 + 0.5) = 128``.
Decoding inverts both steps:

.. math::  f_q = \\frac{2 q}{\\mu} - 1,\\qquad
           \\hat x = \\mathrm{sign}(f_q)\\, \\frac{(1 + \\mu)^{|f_q|} - 1}{\\mu},

so ``encode(decode(q)) == q`` for every code ``q`` (``f(decode(q))`` is
``f_q`` up to rounding error, far inside the half-level margin), and
``decode(0) = -1``, ``decode(255) = 1``.
"""

import logging
import math
import os
import struct
import warnings

import numpy as np

log = logging.getLogger(__name__)

LEVELS = 256
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "audio")


def default_audio_dir():
    """The folder of speech shipped inside the package (``npar/data/audio``):
    one CMU ARCTIC utterance and 24 eSpeak NG sentences, 16 kHz mono."""
    return SHIPPED_DIR


def _check_mu(levels):
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise TypeError(f"levels must be an integer >= 2, got {levels!r}")
    if levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return float(levels - 1)


def mu_law_encode(x, levels=LEVELS):
    """Mu-law codes of samples ``x`` in ``[-1, 1]`` (see the module docstring).

    Args:
        x: float array of any shape; values outside ``[-1, 1]`` are clipped.
        levels: ``V``, the number of codes (``mu = V - 1``).

    Returns:
        integer codes in ``0 .. V - 1``, same shape, ``uint8`` when
        ``V <= 256`` (``int64`` otherwise).
    """
    mu = _check_mu(levels)
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"x must be a real-valued array, got dtype {x.dtype}")
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError(
            f"x holds {np.count_nonzero(np.isnan(x))} NaN sample(s); mu-law needs "
            "numbers (values outside [-1, 1] are clipped)")
    x = np.clip(x.astype(np.float64), -1.0, 1.0)
    f = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    codes = np.floor(0.5 * mu * (f + 1.0) + 0.5)
    dtype = np.uint8 if levels <= 256 else np.int64
    return np.clip(codes, 0, mu).astype(dtype)


def mu_law_decode(q, levels=LEVELS):
    """Samples in ``[-1, 1]`` (float64) of mu-law codes ``q`` (any shape).

    Raises ValueError for codes outside ``0 .. V - 1``.
    """
    mu = _check_mu(levels)
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"mu-law codes must be integers, got dtype {q.dtype}")
    if q.size and (q.min() < 0 or q.max() > mu):
        raise ValueError(
            f"mu-law codes must lie in 0..{int(mu)}, got values from {q.min()} "
            f"to {q.max()}"
        )
    f = 2.0 * q.astype(np.float64) / mu - 1.0
    return np.sign(f) * (np.power(1.0 + mu, np.abs(f)) - 1.0) / mu


def expand_paths(paths):
    """WAV files named by ``paths``: files as given, folders searched (with
    their sub-folders) for ``*.wav``, each folder's list sorted.

    Raises FileNotFoundError for a path that does not exist and ValueError
    when nothing is found.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names if name.lower().endswith(".wav"))
            if not found:
                raise ValueError(f"no .wav files in folder {path}")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"no such audio file or folder: {path}")
    if not files:
        raise ValueError("no audio paths given")
    return files


def _to_unit_float(data, path):
    # Integer PCM to [-1, 1]; floats as stored, clipped.
    if data.dtype == np.uint8:
        return (data.astype(np.float64) - 128.0) / 128.0
    if data.dtype.kind == "i":
        return data.astype(np.float64) / float(2 ** (8 * data.dtype.itemsize - 1))
    if data.dtype.kind == "f":
        bad = np.count_nonzero(~np.isfinite(data))
        if bad:
            raise ValueError(
                f"{path} holds {bad} NaN or infinite sample(s): the file is "
                "damaged")
        return np.clip(data.astype(np.float64), -1.0, 1.0)
    raise ValueError(f"{path}: unsupported WAV sample type {data.dtype}")


def read_wav(path, sample_rate=None):
    """Read a WAV file as mono float64 samples in ``[-1, 1]``.

    Args:
        path: the file.
        sample_rate: if given, resample to this rate (Hz) with
            :func:`scipy.signal.resample_poly`.

    Returns:
        ``(samples (T,), rate)``.

    Raises:
        ValueError: the file is empty, truncated, not a WAV file, or holds
        no samples.
    """
    from scipy.io import wavfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such audio file: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a WAV file")
    try:
        with warnings.catch_warnings():
            # scipy warns, and returns what it found, when the data chunk is
            # shorter than its header says: treat that as a damaged file.
            warnings.simplefilter("error", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except (ValueError, EOFError, OSError, struct.error,
            wavfile.WavFileWarning) as error:
        raise ValueError(
            f"{path} is not a readable WAV file (truncated or another format?): "
            f"{error}"
        ) from error
    if data.ndim == 2:
        data = _to_unit_float(data, path).mean(axis=1)
    elif data.ndim == 1:
        data = _to_unit_float(data, path)
    else:
        raise ValueError(f"{path}: unexpected WAV data shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"{path} holds no audio samples")
    if sample_rate is not None and sample_rate != rate:
        data = resample(data, rate, sample_rate)
    return data, int(sample_rate or rate)


def resample(x, rate_in, rate_out):
    """Resample ``x`` ``(T,)`` from ``rate_in`` to ``rate_out`` Hz (polyphase
    filter, :func:`scipy.signal.resample_poly`); returns float64 in
    ``[-1, 1]``."""
    from scipy.signal import resample_poly

    for name, rate in (("rate_in", rate_in), ("rate_out", rate_out)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) \
                or rate < 1:
            raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float64)
    g = math.gcd(int(rate_in), int(rate_out))
    y = resample_poly(np.asarray(x, dtype=np.float64), rate_out // g, rate_in // g)
    return np.clip(y, -1.0, 1.0)


def write_wav(path, x, sample_rate):
    """Write samples ``x`` ``(T,)`` in ``[-1, 1]`` as 16-bit mono PCM."""
    from scipy.io import wavfile

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be one channel, shape (T,), got {x.shape}")
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(folder, exist_ok=True)
    wavfile.write(os.fspath(path), int(sample_rate), pcm)


def require_length(x, length, name="audio"):
    """Raise ValueError unless ``x`` has at least ``length`` samples."""
    if len(x) < length:
        raise ValueError(
            f"{name} has {len(x)} samples, shorter than the {length} required "
            "(use longer audio or a smaller model / crop length)"
        )
    return x


def load_codes(paths=None, sample_rate=16000, min_length=1, levels=LEVELS):
    """Read, resample and mu-law encode every WAV file named by ``paths``.

    Args:
        paths: files and folders (see :func:`expand_paths`); None for the
            shipped speech (:func:`default_audio_dir`).
        sample_rate: target rate in Hz.
        min_length: each file must have at least this many samples after
            resampling.
        levels: ``V``.

    Returns:
        ``(codes, files)``: a list of integer arrays ``(T_i,)``, one per file,
        and the file names in the same order.
    """
    files = expand_paths(default_audio_dir() if paths is None else paths)
    codes = []
    for path in files:
        x, _ = read_wav(path, sample_rate)
        require_length(x, min_length, name=path)
        codes.append(mu_law_encode(x, levels))
    log.info("read %d audio files, %d samples at %d Hz", len(files),
             sum(len(c) for c in codes), sample_rate)
    return codes, files
