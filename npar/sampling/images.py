"""Sample pictures: PNG grids of images and strips of raster-order growth.

Images are ``(N, C, H, W)`` integer arrays with ``C`` 1 (grey) or 3 (RGB)
and values in ``0..V-1``; they are written through Pillow, stretched to
``0..255`` when ``V`` is not 256, and optionally upscaled by an integer
factor (nearest neighbour, so that each pixel stays a sharp square).
"""

import math
import os

import numpy as np

# Grey level of the lines between tiles and of the sub-pixels not drawn yet.
SEPARATOR = 128


def _as_uint8(images, levels):
    images = np.asarray(images)
    if images.dtype.kind not in "iu":
        raise TypeError(
            f"images must be integers in 0..{levels - 1}, got dtype {images.dtype}"
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, C, H, W) with C = 1 or 3, got "
            f"{images.shape}"
        )
    if images.size and (images.min() < 0 or images.max() >= levels):
        raise ValueError(
            f"image values must lie in 0..{levels - 1}, got {images.min()} to "
            f"{images.max()}"
        )
    if levels == 256:
        return images.astype(np.uint8)
    return np.round(images * (255.0 / (levels - 1))).astype(np.uint8)


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def image_grid(images, columns=None, padding=1, scale=1, levels=256,
               separator=SEPARATOR):
    """Tile images into one picture, row by row.

    Args:
        images: ``(N, C, H, W)`` integers in ``0..levels-1``, ``C`` 1 or 3.
        columns: tiles per row; default ``ceil(sqrt(N))``.
        padding: width of the separator lines, in image pixels.
        scale: integer upscaling factor, ``>= 1``.
        levels: number of levels ``V`` of the values.
        separator: grey level of the lines (and of empty tiles).

    Returns:
        ``(H', W')`` uint8 for grey images, ``(H', W', 3)`` for RGB, with
        ``H' = scale (rows (H + padding) + padding)`` and likewise ``W'``.
    """
    images = _as_uint8(images, levels)
    n_images, channels, height, width = images.shape
    if n_images < 1:
        raise ValueError("image_grid needs at least one image")
    columns = math.ceil(math.sqrt(n_images)) if columns is None else columns
    columns = min(_check_positive("columns", columns), n_images)
    scale = _check_positive("scale", scale)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) \
            or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    rows = math.ceil(n_images / columns)

    grid = np.full((channels, rows * (height + padding) + padding,
                    columns * (width + padding) + padding), separator, np.uint8)
    for index in range(n_images):
        r, c = divmod(index, columns)
        top = padding + r * (height + padding)
        left = padding + c * (width + padding)
        grid[:, top:top + height, left:left + width] = images[index]
    grid = np.repeat(np.repeat(grid, scale, axis=1), scale, axis=2)
    return grid[0] if channels == 1 else np.ascontiguousarray(grid.transpose(1, 2, 0))


def growth_frames(snapshots, steps, index=0, levels=256, undrawn=SEPARATOR):
    """One image's snapshots during generation, as 8-bit frames in which the
    sub-pixels not drawn yet show as ``undrawn`` (so that they stand apart
    from black pixels).

    Args:
        snapshots: ``(S, N, C, H, W)`` from
            :func:`npar.sampling.pixelcnn.generate` (``snapshot_every``).
        steps: ``(S,)`` sub-pixels drawn at each snapshot; sub-pixel ``k``
            is ``(i, j, c)`` with ``k = (i W + j) C + c`` (raster order, then
            colour).
        index: which of the ``N`` images.
        levels: number of levels ``V`` of the values (stretched to 0..255).
        undrawn: 8-bit value shown for a sub-pixel not drawn yet.

    Returns:
        ``(S, C, H, W)`` uint8 frames.
    """
    snapshots = np.asarray(snapshots)
    steps = np.asarray(steps)
    if snapshots.ndim != 5 or steps.shape != snapshots.shape[:1]:
        raise ValueError(
            f"snapshots must be (S, N, C, H, W) with steps (S,), got "
            f"{snapshots.shape} and {steps.shape}"
        )
    if not 0 <= index < snapshots.shape[1]:
        raise ValueError(
            f"index must lie in 0..{snapshots.shape[1] - 1}, got {index!r}"
        )
    frames = _as_uint8(snapshots[:, index], levels)
    _, channels, height, width = frames.shape
    # Sub-pixel number of every (c, i, j), in (C, H, W) layout.
    order = np.arange(height * width * channels).reshape(height, width, channels)
    order = order.transpose(2, 0, 1)
    for frame, done in zip(frames, steps):
        frame[order >= done] = undrawn
    return frames


def save_png(picture, path):
    """Write a ``(H, W)`` or ``(H, W, 3)`` uint8 array to ``path`` as PNG,
    atomically (:func:`npar.models.io.atomic_write`): a reader sees the old
    picture or the new one, and a failed write leaves neither a half-written
    picture nor a temporary file."""
    from PIL import Image

    from npar.models.io import atomic_write

    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write a PNG to {path}: it is a folder")
    image = Image.fromarray(np.ascontiguousarray(picture))
    atomic_write(path, lambda handle: image.save(handle, format="PNG"),
                 suffix=".png")
    return path


def save_grid(images, path, columns=None, padding=1, scale=1, levels=256):
    """Write :func:`image_grid` of ``images`` to ``path`` (PNG); returns ``path``."""
    return save_png(image_grid(images, columns, padding, scale, levels), path)


def save_growth_strip(snapshots, steps, path, index=0, padding=1, scale=1,
                      levels=256):
    """Write the raster-order growth of image ``index`` as one row of frames
    (see :func:`growth_frames`) to ``path`` (PNG); returns ``path``."""
    frames = growth_frames(snapshots, steps, index, levels)
    return save_png(image_grid(frames, columns=len(frames), padding=padding,
                               scale=scale), path)
