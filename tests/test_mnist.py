"""The MNIST loader: shipped files verify; damaged files give clear errors."""

import gzip
import shutil

import numpy as np
import pytest

from npar.data import mnist
from npar.data.mnist import load_mnist, parse_idx


def test_shipped_mnist_matches_the_published_figures():
    images, labels = load_mnist("train")
    assert images.shape == (60000, 1, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(
        np.bincount(labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                              5949])
    assert images.mean() == pytest.approx(33.318, abs=1e-3)
    test_images, test_labels = load_mnist("test")
    assert test_images.shape == (10000, 1, 28, 28) and test_labels.shape == (10000,)


def _copy_shipped(folder):
    for path in (mnist.SHIPPED_DIR,):
        for name in mnist.SHA256:
            shutil.copy(f"{path}/{name}.gz", folder / f"{name}.gz")


def test_data_dir_is_searched_first(tmp_path):
    _copy_shipped(tmp_path)
    images, _ = load_mnist("test", data_dir=tmp_path)
    assert images.shape[0] == 10000
    assert mnist.search_places(tmp_path)[0] == str(tmp_path)


def test_a_data_dir_without_the_files_is_named_in_a_warning(tmp_path, caplog):
    _copy_shipped(tmp_path)
    with caplog.at_level("WARNING", logger="npar.data.mnist"):
        load_mnist("test", data_dir=tmp_path)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="npar.data.mnist"):
        images, _ = load_mnist("test", data_dir=tmp_path / "mistyped")
    assert images.shape[0] == 10000
    message = caplog.records[0].getMessage()
    assert "not in --data-dir" in message and "mistyped" in message


def test_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NPAR_DATA", str(tmp_path))
    assert mnist.search_places()[0] == str(tmp_path)


def test_corrupt_file_fails_its_checksum(tmp_path):
    _copy_shipped(tmp_path)
    name = "t10k-labels-idx1-ubyte"
    data = bytearray(gzip.decompress((tmp_path / f"{name}.gz").read_bytes()))
    data[100] ^= 0xFF
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ValueError, match="SHA-256 .* expected"):
        load_mnist("test", data_dir=tmp_path)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    _copy_shipped(tmp_path)
    name = "t10k-images-idx3-ubyte"
    raw = (tmp_path / f"{name}.gz").read_bytes()
    (tmp_path / f"{name}.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or not a valid gzip"):
        load_mnist("test", data_dir=tmp_path)


def test_parse_idx_errors():
    header = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big")
    np.testing.assert_array_equal(parse_idx(header + bytes(range(5))), range(5))
    with pytest.raises(ValueError, match="promises shape"):
        parse_idx(header + bytes(3))
    with pytest.raises(ValueError, match="bad magic"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="element type"):
        parse_idx(bytes([0, 0, 0x0D, 1]) + bytes(8))


def test_missing_files_offline_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "SHIPPED_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("NPAR_DATA", raising=False)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(mnist.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("test", data_dir=tmp_path / "empty")
    message = str(info.value)
    assert "empty" in message and "nowhere" in message
    assert "--data-dir" in message and "network unreachable" in message
    with pytest.raises(FileNotFoundError, match="NPAR_DATA"):
        load_mnist("test", data_dir=tmp_path / "empty", download=False)


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist("valid")
