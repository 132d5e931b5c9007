"""The CUDA target: every kernel of :mod:`npar.ops` as a ``numba.cuda``
kernel, device versions of the models' passes, and a training step that
keeps parameters and activations on the GPU.

Modules:

- :mod:`npar.cuda.runtime`: is a GPU (or the simulator) usable, launch
  configurations, device-array helpers;
- :mod:`npar.cuda.linalg`: tiled shared-memory matmul, row and column sums,
  float64 sums;
- :mod:`npar.cuda.elementwise`: gated activation, ReLU, down-shift, adds;
- :mod:`npar.cuda.conv`: 2-D masked dilated and 1-D causal dilated
  convolutions (im2col + matmul + col2im), the dense map;
- :mod:`npar.cuda.softmax`: softmax cross-entropy;
- :mod:`npar.cuda.optim`: flat parameter buffers, Adam and SGD, clipping;
- :mod:`npar.cuda.models`: device GatedPixelCNN, PixelCNN and WaveNet;
- :mod:`npar.cuda.train`: :class:`~npar.cuda.train.CudaTrainer`.

Only :mod:`npar.cuda.runtime` is imported here, so that :func:`available`
answers (False, with the reason from :func:`describe`) where numba-cuda is
not installed. Select the backend with ``npar.set_backend("cuda")`` or the
``--device cuda`` option; see docs/cuda.md.
"""

from npar.cuda.runtime import (
    CudaUnavailableError,
    LaunchPlan,
    available,
    describe,
    launch_plan,
    require,
    set_launch_plan,
    simulator_enabled,
)


def __getattr__(name):
    # CudaTrainer and device_model import numba.cuda: load them on first use.
    if name == "CudaTrainer":
        from npar.cuda.train import CudaTrainer

        return CudaTrainer
    if name == "device_model":
        from npar.cuda.models import device_model

        return device_model
    raise AttributeError(f"module 'npar.cuda' has no attribute {name!r}")


__all__ = [
    "CudaTrainer",
    "CudaUnavailableError",
    "LaunchPlan",
    "available",
    "describe",
    "device_model",
    "launch_plan",
    "require",
    "set_launch_plan",
    "simulator_enabled",
]
