"""MNIST in the IDX format (LeCun et al.), gzip-compressed or plain.

Where the files are looked for, in order:

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the ``NPAR_DATA`` environment variable;
3. the copy shipped inside the package (``npar/data/mnist``).

Every file is checked against its SHA-256. If none of the places has the
files, they are downloaded (when a network is there) into the first place
named (or ``~/.cache/npar/mnist``); offline, the error lists where it looked.
"""

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request

import numpy as np

log = logging.getLogger(__name__)

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
SHA256 = {
    "train-images-idx3-ubyte":
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte":
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte":
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte":
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist")
_IDX_TYPES = {0x08: np.uint8}


def parse_idx(data, name="<bytes>"):
    """Parse the bytes of an IDX file into an array.

    The header is two zero bytes, a type byte (0x08 = unsigned byte), the
    number of dimensions ``d``, then ``d`` big-endian 32-bit sizes.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name} is not an IDX file (bad magic number)")
    if data[2] not in _IDX_TYPES:
        raise ValueError(f"{name}: unsupported IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name} is truncated inside its IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big")
                  for k in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count:
        raise ValueError(
            f"{name} is truncated or damaged: the header promises shape {shape} "
            f"({count} bytes of data) but {len(data) - header} bytes follow"
        )
    return np.frombuffer(data, dtype=_IDX_TYPES[data[2]], offset=header).reshape(
        shape)


def _read_bytes(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(
            f"{path} is truncated or not a valid gzip file: {error}") from error


def _find(stem, places):
    for folder in places:
        for candidate in (stem + ".gz", stem):
            path = os.path.join(folder, candidate)
            if os.path.exists(path):
                return path
    return None


def _download(stem, folder):
    os.makedirs(folder, exist_ok=True)
    errors = []
    for mirror in MIRRORS:
        url = mirror + stem + ".gz"
        try:
            log.info("downloading %s", url)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url,
                                                                    timeout=30) as r:
                shutil.copyfileobj(r, out)
            target = os.path.join(folder, stem + ".gz")
            os.replace(tmp, target)
            return target
        except OSError as error:
            errors.append(f"{url}: {error}")
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise FileNotFoundError("; ".join(errors))


def search_places(data_dir=None):
    """The folders searched, in order (see the module docstring)."""
    places = []
    if data_dir:
        places.append(os.fspath(data_dir))
    if os.environ.get("NPAR_DATA"):
        places.append(os.environ["NPAR_DATA"])
    places.append(SHIPPED_DIR)
    return places


def load_idx_file(stem, data_dir=None, download=True):
    """Find, verify (SHA-256) and parse one MNIST file by its stem name."""
    places = search_places(data_dir)
    path = _find(stem, places)
    if data_dir and path is not None and not path.startswith(
            os.path.join(os.fspath(data_dir), "")):
        # Same bytes either way (SHA-256 below), but a mistyped folder should
        # not pass unnoticed.
        log.warning("MNIST file %s is not in --data-dir %s; using %s", stem,
                    os.fspath(data_dir), path)
    if path is None:
        folder = places[0] if data_dir or os.environ.get("NPAR_DATA") else (
            os.path.join(os.path.expanduser("~"), ".cache", "npar", "mnist"))
        path = _find(stem, [folder])
        if path is None and download:
            try:
                path = _download(stem, folder)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"MNIST file {stem}(.gz) is not in any of {places} and could "
                    f"not be downloaded ({error}). Copy the four IDX files into "
                    "a folder and pass --data-dir FOLDER or set NPAR_DATA=FOLDER."
                ) from error
        if path is None:
            raise FileNotFoundError(
                f"MNIST file {stem}(.gz) is not in any of {places}; pass "
                "--data-dir FOLDER or set NPAR_DATA=FOLDER"
            )
    data = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[stem]:
        raise ValueError(
            f"{path} has SHA-256 {digest}, expected {SHA256[stem]}: the file is "
            "damaged or not the standard MNIST file"
        )
    return parse_idx(data, path)


def load_mnist(split="train", data_dir=None, download=True):
    """Load an MNIST split.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: a folder with the IDX files (optional; see the module
            docstring for the search order).
        download: try the public mirrors when the files are nowhere.

    Returns:
        images: ``(N, 1, 28, 28)`` uint8 in 0..255; labels: ``(N,)`` uint8.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = load_idx_file(FILES[(split, "images")], data_dir, download)
    labels = load_idx_file(FILES[(split, "labels")], data_dir, download)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"MNIST {split} images {images.shape} and labels {labels.shape} do "
            "not match"
        )
    return images[:, None, :, :], labels


def quantize(images, levels):
    """Reduce 0..255 intensities to ``levels`` levels ``0..levels-1``:
    ``q = floor(x levels / 256)`` (``levels=2`` gives binary images with a
    threshold at 128; ``levels=256`` returns the images unchanged).

    Args:
        images: uint8 array of any shape.
        levels: integer ``V`` in 2..256.

    Returns:
        uint8 array of the same shape.
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not (
            2 <= levels <= 256):
        raise ValueError(f"levels must be an integer in 2..256, got {levels!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in 0..255, got {images.dtype}")
    if levels == 256:
        return images
    return (images.astype(np.uint16) * levels // 256).astype(np.uint8)


def central_crop(images, size):
    """The central ``H' x W'`` pixels of ``(N, C, H, W)`` images.

    Args:
        images: array ``(..., H, W)``.
        size: ``S`` for a square crop, ``(H', W')``, or None for no crop.
            Where ``H - H'`` is odd, the window starts ``(H - H') // 2`` rows
            down, half a pixel above the centre (likewise for columns).

    Returns:
        a C-contiguous array ``(..., H', W')``.
    """
    if size is None:
        return images
    height, width = images.shape[-2:]
    size_h, size_w = (size, size) if np.ndim(size) == 0 else tuple(size)
    if not (1 <= size_h <= height and 1 <= size_w <= width):
        raise ValueError(
            f"crop {size_h}x{size_w} must fit in the {height}x{width} images")
    top, left = (height - size_h) // 2, (width - size_w) // 2
    return np.ascontiguousarray(images[..., top:top + size_h, left:left + size_w])
