"""A training step that stays on the device.

:class:`CudaTrainer` holds the parameters, the gradients and the optimizer
moments on the device for the whole run. One step uploads the batch (the
integer images or codes), runs the device model's forward and backward
passes, sums the loss and the squared gradient norm on the device, copies
those two numbers to the host (the only copy back), clips the gradients if
asked, and updates the parameters with the optimizer kernel. The
parameters and the optimizer state come back to the host only when asked
(:meth:`CudaTrainer.to_host`), for checkpoints and sampling.

One step is the same computation as one iteration of
:func:`npar.train.loop.fit` on the CPU: ``model.loss_and_grads``,
``clip_by_global_norm``, then ``optimizer.step`` with the scheduled learning
rate. How ``fit`` uses it::

    trainer = CudaTrainer(model, optimizer)       # --device cuda
    ...
    loss, norm = trainer.loss_and_grads(*batch, clip_norm=clip_norm)
    # (check that loss and norm are finite, as for the CPU)
    trainer.update(lr)
    ...
    trainer.to_host()                            # before save_checkpoint
"""

import math

import numpy as np

from npar.cuda.elementwise import scale
from npar.cuda.linalg import sum_all
from npar.cuda.models import device_model
from npar.cuda.optim import DeviceOptimizer, FlatArrays
from npar.cuda.runtime import empty, require


class CudaTrainer:
    """Training steps of ``model`` with ``optimizer`` on the device.

    Args:
        model: an npar GatedPixelCNN, PixelCNN or WaveNet; its parameters
            are copied to the device (float32 or float64, as they are).
        optimizer: an :class:`npar.train.optim.Adam` or ``SGD``; its state
            (if resumed) is copied to the device, its step count ``t`` is
            advanced on the host.

    Raises:
        CudaUnavailableError: no GPU and no simulator (a ValueError).
        NotImplementedError: a model the device code does not cover.
    """

    def __init__(self, model, optimizer):
        require()
        self.model = model
        self.device_model = device_model(model)
        self.params = FlatArrays.from_host(model.params)
        self.grads = FlatArrays(self.params.shapes, self.params.dtype)
        self.optimizer = DeviceOptimizer(optimizer, self.params)
        # [0]: summed loss of the step, [1]: squared gradient norm (float64).
        self._scalars = empty((2,), np.float64)

    def loss_and_grads(self, batch, labels=None, clip_norm=None):
        """Forward and backward pass of one batch, gradients left on the device.

        Args:
            batch: ``(N, C, H, W)`` integer images or ``(N, T)`` codes, on the
                host.
            labels: must be None (class-conditional models run on the CPU).
            clip_norm: clip the global gradient norm to this (None: off).

        Returns:
            ``(loss, norm)``: the mean negative log-likelihood (nats) and the
            gradient norm before clipping, as host floats.
        """
        if labels is not None:
            raise NotImplementedError(
                "class labels: the CUDA backend runs unconditional models only")
        x = self.device_model.upload_batch(batch)
        count = self.device_model.loss_and_grads(self.params, x, self.grads,
                                                 self._scalars[0:1])
        sum_all(self.grads.buffer, out=self._scalars, slot=1, square=True)
        loss_sum, squares = self._scalars.copy_to_host()
        loss = float(loss_sum) / count
        norm = math.sqrt(float(squares))
        if clip_norm is not None and clip_norm > 0 and math.isfinite(norm) \
                and norm > clip_norm:
            scale(self.grads.buffer, clip_norm / norm, out=self.grads.buffer)
        return loss, norm

    def update(self, lr=None):
        """Apply the optimizer to the gradients of the last
        :meth:`loss_and_grads` (learning rate ``lr``, default the
        optimizer's)."""
        self.optimizer.step(self.grads, lr)

    def step(self, batch, lr=None, clip_norm=None):
        """:meth:`loss_and_grads` then :meth:`update`; skips the update (and
        returns the values) when the loss or the norm is not finite."""
        loss, norm = self.loss_and_grads(batch, clip_norm=clip_norm)
        if math.isfinite(loss) and math.isfinite(norm):
            self.update(lr)
        return loss, norm

    def gradients_to_host(self):
        """The last step's gradients as ``{name: host array}`` (after
        clipping)."""
        return self.grads.to_host()

    def to_host(self):
        """Copy the parameters into ``model.params`` and the optimizer state
        into the CPU optimizer object; returns the model."""
        self.model.params.update(self.params.to_host())
        self.optimizer.to_host()
        return self.model
