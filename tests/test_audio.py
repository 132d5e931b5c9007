"""Audio: mu-law identities and rounding, WAV reading in every sample
format, resampling, path expansion, the shipped speech, clear errors."""

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from npar.data.audio import (
    default_audio_dir,
    expand_paths,
    load_codes,
    mu_law_decode,
    mu_law_encode,
    read_wav,
    require_length,
    resample,
    write_wav,
)

MU = 255.0


def test_decode_then_encode_is_identity_on_every_code():
    codes = np.arange(256)
    np.testing.assert_array_equal(mu_law_encode(mu_law_decode(codes)), codes)


def test_fixed_points():
    assert mu_law_encode(0.0) == 128
    assert mu_law_encode(-0.0) == 128
    assert mu_law_encode(-1.0) == 0 and mu_law_encode(1.0) == 255
    assert mu_law_decode(np.array(0)) == -1.0 and mu_law_decode(np.array(255)) == 1.0
    # Out-of-range samples are clipped, not wrapped.
    np.testing.assert_array_equal(mu_law_encode(np.array([-3.0, 2.0])), [0, 255])
    assert mu_law_encode(np.zeros(3)).dtype == np.uint8


def _companded(x):
    return np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)


def _sample_for_level(level):
    # The x whose companded value sits at the continuous level (0..255).
    f = 2.0 * level / MU - 1.0
    return np.sign(f) * np.expm1(abs(f) * np.log1p(MU)) / MU


@pytest.mark.parametrize("level", [3.5, 60.5, 127.5 + 1.0, 200.5, 254.5])
def test_rounds_to_nearest_not_floor(level):
    # Just above a half level rounds up, just below rounds down; a floor
    # would give int(level) on both sides.
    above = _sample_for_level(level + 1e-6)
    below = _sample_for_level(level - 1e-6)
    assert mu_law_encode(above) == math.ceil(level)
    assert mu_law_encode(below) == math.floor(level)


@settings(max_examples=200)
@given(st.floats(-1.0, 1.0, allow_nan=False))
def test_encode_is_the_nearest_level(x):
    q = int(mu_law_encode(x))
    continuous = (_companded(x) + 1.0) * MU / 2.0
    assert abs(q - continuous) <= 0.5 + 1e-9
    # and decoding lands within half a level, in the companded domain
    assert abs((_companded(mu_law_decode(np.array(q))) + 1.0) * MU / 2.0
               - continuous) <= 0.5 + 1e-9


def test_encode_is_monotone():
    x = np.linspace(-1, 1, 20001)
    q = mu_law_encode(x).astype(int)
    assert np.all(np.diff(q) >= 0)
    assert set(q.tolist()) == set(range(256))


def test_mu_law_errors():
    with pytest.raises(ValueError, match="0..255, got values from 0 to 256"):
        mu_law_decode(np.array([0, 256]))
    with pytest.raises(TypeError, match="integers"):
        mu_law_decode(np.array([0.5]))
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        mu_law_encode(0.0, levels=1)
    with pytest.raises(TypeError, match="real-valued"):
        mu_law_encode(np.array(["a"]))
    # NaN has no nearest level: refused, not cast to an arbitrary code.
    with pytest.raises(ValueError, match="1 NaN sample"):
        mu_law_encode(np.array([0.5, np.nan]))
    np.testing.assert_array_equal(mu_law_encode(np.array([-np.inf, np.inf])),
                                  [0, 255])


# ---- WAV files ---------------------------------------------------------------

RATE = 8000


def _tone(n=800, amplitude=0.5):
    t = np.arange(n) / RATE
    return amplitude * np.sin(2 * np.pi * 440 * t)


@pytest.mark.parametrize("kind", ["uint8", "int16", "int32", "float32", "float64"])
def test_read_every_sample_format(tmp_path, kind):
    x = _tone()
    if kind == "uint8":
        data = np.round(x * 127 + 128).astype(np.uint8)
        tolerance = 1 / 127
    elif kind == "int16":
        data = np.round(x * 32767).astype(np.int16)
        tolerance = 1 / 32767
    elif kind == "int32":
        data = np.round(x * (2**31 - 1)).astype(np.int32)
        tolerance = 1e-8
    else:
        data = x.astype(kind)
        tolerance = 1e-7
    path = tmp_path / f"{kind}.wav"
    wavfile.write(path, RATE, data)
    y, rate = read_wav(path)
    assert rate == RATE and y.dtype == np.float64 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=tolerance)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = _tone(amplitude=0.6), _tone(amplitude=0.2)
    data = np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "stereo.wav", RATE, data)
    y, _ = read_wav(tmp_path / "stereo.wav")
    np.testing.assert_allclose(y, (left + right) / 2, atol=2 / 32767)


def test_resampling_keeps_duration_and_tone(tmp_path):
    x = _tone(n=8000, amplitude=0.5)
    write_wav(tmp_path / "tone.wav", x, RATE)
    y, rate = read_wav(tmp_path / "tone.wav", sample_rate=16000)
    assert rate == 16000 and len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 440) <= 2
    assert len(resample(x, 8000, 8000)) == 8000
    with pytest.raises(ValueError, match="rate_out must be a positive integer"):
        resample(x, 8000, 0)


def test_write_then_read_is_16_bit_exact(tmp_path):
    x = _tone()
    write_wav(tmp_path / "sub" / "out.wav", x, RATE)
    rate, data = wavfile.read(tmp_path / "sub" / "out.wav")
    assert rate == RATE and data.dtype == np.int16
    np.testing.assert_allclose(read_wav(tmp_path / "sub" / "out.wav")[0], x,
                               atol=1 / 32767)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        write_wav(tmp_path / "bad.wav", np.zeros((2, 3)), RATE)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_wav(empty)

    good = tmp_path / "good.wav"
    write_wav(good, _tone(), RATE)
    raw = good.read_bytes()
    for cut in (20, len(raw) // 2):
        truncated = tmp_path / f"cut{cut}.wav"
        truncated.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="not a readable WAV"):
            read_wav(truncated)

    text = tmp_path / "text.wav"
    text.write_text("this is not audio at all, just some words")
    with pytest.raises(ValueError, match="not a readable WAV"):
        read_wav(text)

    no_samples = tmp_path / "none.wav"
    wavfile.write(no_samples, RATE, np.zeros(0, dtype=np.int16))
    with pytest.raises(ValueError, match="holds no audio samples"):
        read_wav(no_samples)

    with pytest.raises(FileNotFoundError, match="no such audio file"):
        read_wav(tmp_path / "missing.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_wav_with_non_finite_samples_is_refused(tmp_path, bad):
    x = _tone().astype(np.float32)
    x[10:13] = bad
    path = tmp_path / "damaged.wav"
    wavfile.write(path, RATE, x)
    with pytest.raises(ValueError, match="holds 3 NaN or infinite sample"):
        read_wav(path)


def test_require_length():
    assert len(require_length(np.zeros(10), 10)) == 10
    with pytest.raises(ValueError, match="has 9 samples, shorter than the 10"):
        require_length(np.zeros(9), 10, name="clip")


def test_expand_paths(tmp_path):
    for name in ("b.wav", "a.WAV", "notes.txt", "sub/c.wav"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    files = expand_paths([tmp_path])
    assert [os.path.relpath(f, tmp_path) for f in files] == \
        ["a.WAV", "b.wav", os.path.join("sub", "c.wav")]
    assert expand_paths(str(tmp_path / "b.wav")) == [str(tmp_path / "b.wav")]
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="no .wav files in folder"):
        expand_paths([tmp_path / "empty_dir"])
    with pytest.raises(FileNotFoundError, match="no such audio file or folder"):
        expand_paths([tmp_path / "nope"])
    with pytest.raises(ValueError, match="no audio paths"):
        expand_paths([])


def test_shipped_speech_is_inside_the_package():
    import npar

    folder = default_audio_dir()
    assert folder == os.path.join(os.path.dirname(os.path.abspath(npar.__file__)),
                                  "data", "audio")
    files = expand_paths(folder)
    assert len(files) == 25
    assert os.path.exists(os.path.join(folder, "README.md"))
    assert os.path.exists(os.path.join(folder, "espeak", "sentences.txt"))
    codes, names = load_codes([files[0]], sample_rate=16000, min_length=16000)
    assert names == files[:1] and codes[0].dtype == np.uint8
    assert len(codes[0]) == 64000  # arctic_a0007: 4.0 s at 16 kHz
    # Speech, not silence or noise: most samples near the middle codes.
    assert 100 < np.median(codes[0]) < 156
    with pytest.raises(ValueError, match="shorter than the 100000 required"):
        load_codes([files[0]], sample_rate=16000, min_length=100000)
