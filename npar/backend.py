"""The compute backend: ``"cpu"`` (Numba CPU kernels and BLAS, the
default) or ``"cuda"`` (the kernels of :mod:`npar.cuda` on a GPU, or on
Numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1``).

The choice is global to the process. The CPU models (``model.forward``,
``model.loss_and_grads``) always run on the CPU, whatever the backend;
training code asks :func:`make_trainer` for a device trainer when the
backend is ``"cuda"``.
"""

import logging

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cuda")
_backend = "cpu"


def set_backend(name):
    """Select ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: an unknown name.
        npar.cuda.CudaUnavailableError: ``"cuda"`` where neither a GPU nor
            the simulator is usable (a ValueError whose message says what
            was tried and how to enable the simulator).
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cuda":
        from npar.cuda.runtime import require

        log.info("CUDA backend on %s", require())
    _backend = name
    return name


def get_backend():
    """The backend in force, ``"cpu"`` or ``"cuda"``."""
    return _backend


def add_device_argument(parser):
    """Add ``--device cpu|cuda`` to an argparse parser (default cpu)."""
    parser.add_argument(
        "--device", choices=BACKENDS, default="cpu",
        help="where training steps run: cpu (default) or cuda (a GPU through "
        "numba-cuda; NUMBA_ENABLE_CUDASIM=1 runs the CUDA kernels on the CPU "
        "simulator, slowly)")
    return parser


def make_trainer(model, optimizer, device=None):
    """A :class:`npar.cuda.train.CudaTrainer` when the backend (or
    ``device``, which also sets it) is ``"cuda"``; None for the CPU."""
    if device is not None:
        set_backend(device)
    if _backend == "cpu":
        return None
    from npar.cuda.train import CudaTrainer

    return CudaTrainer(model, optimizer)
