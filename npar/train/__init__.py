"""Training: optimizers, gradient clipping, atomic checkpoints, the loop."""

from npar.train.checkpoint import load_checkpoint, save_checkpoint
from npar.train.loop import TrainingDiverged, fit
from npar.train.optim import SGD, Adam, clip_by_global_norm, make_optimizer

__all__ = [
    "SGD",
    "Adam",
    "TrainingDiverged",
    "clip_by_global_norm",
    "fit",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
]
