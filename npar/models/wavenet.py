"""WaveNet (van den Oord et al. 2016c): an autoregressive model of mu-law
coded audio built from dilated causal convolutions.

The model maps codes ``q`` ``(N, T)`` (integers in ``0 .. V-1``, see
:mod:`npar.data.audio`) to logits ``(N, T, V)``: a categorical distribution
over the ``V = 256`` codes of every sample ``q[t]``, conditioned only on
``q[t - R + 1 .. t-1]`` where ``R`` is the receptive field
(:meth:`WaveNet.receptive_field`). The log-likelihood of a clip is

.. math::  \\log p(q) = \\sum_t \\log \\mathrm{softmax}(z_t)_{q_t},

and bits per sample is ``-log p(q) / (T log 2)``.

Architecture, every map channels-first ``(C, N, T)`` inside:

1. input layer: the one-hot codes, delayed by one step, through a causal
   convolution of ``first_kernel = K_0`` taps (computed as look-ups,
   :mod:`npar.ops.onehot_conv1d`): ``h_0[t]`` sees ``q[t - K_0 .. t-1]``;
2. ``stacks`` times ``layers`` gated residual blocks with dilations
   ``1, 2, 4, ..., 2^(layers-1)`` (sec. 2.3-2.4, fig. 4), block ``i``:

   .. math::  z = W_{d,i} \\ast_{D_i} h_i,\\qquad
              g = \\tanh(z_a) \\odot \\sigma(z_b),\\qquad
              h_{i+1} = h_i + W_{r,i}\\, g,\\qquad s_i = W_{s,i}\\, g,

   with ``*_D`` the causal convolution of ``kernel = K`` taps and dilation
   ``D`` (:mod:`npar.ops.conv1d`) and ``W_r``, ``W_s`` 1x1 convolutions
   (the last block has no residual output: nothing would read it);
3. output head: ``z = W_2 relu(W_1 relu(sum_i s_i))``, two 1x1
   convolutions to ``V`` logits.

The loss (:meth:`WaveNet.loss_and_grads`) is the mean negative
log-likelihood in nats per sample over the positions ``t >= R - 1`` whose
receptive field lies wholly inside the clip, so no prediction is scored
that leans on the zero padding before the clip; ``loss_from_start=True``
scores every position.
"""

import numpy as np

from npar.models.io import register
from npar.nn.causal import CausalConv1d, OneHotCausalConv1d
from npar.ops.activations import (
    gate_backward,
    gate_forward,
    relu_backward,
    relu_forward,
)
from npar.ops.onehot_conv1d import check_codes, onehot_conv1d_input_gradient
from npar.ops.softmax import (
    log_softmax,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

LEVELS = 256


def _check_config(cfg):
    for key in ("levels", "channels", "skip_channels", "head_channels",
                "layers", "stacks", "kernel", "first_kernel"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or value < 1:
            raise ValueError(f"config {key} must be an integer >= 1, got {value!r}")
    if cfg["levels"] < 2:
        raise ValueError(f"config levels must be >= 2, got {cfg['levels']}")
    if not isinstance(cfg["loss_from_start"], bool):
        raise TypeError(
            f"config loss_from_start must be True or False, got "
            f"{cfg['loss_from_start']!r}"
        )


@register
class WaveNet:
    """WaveNet over mu-law codes (see the module docstring).

    Config keys: ``levels`` (V), ``channels`` (residual width ``R``),
    ``skip_channels``, ``head_channels``, ``layers`` (blocks per stack,
    dilations ``1 .. 2^(layers-1)``), ``stacks``, ``kernel`` (``K`` of the
    dilated convolutions), ``first_kernel`` (``K_0`` of the input layer)
    and ``loss_from_start``.

    Parameters: ``input.w`` ``(R, V, K_0)``, ``block{i}.dilated.w``
    ``(2R, R, K)``, ``block{i}.residual.w`` ``(R, R, 1)`` (all blocks but the
    last), ``block{i}.skip.w`` ``(S, R, 1)``, ``head1.w`` ``(H, S, 1)``,
    ``head2.w`` ``(V, H, 1)``, each with its bias ``.b``. All weights use
    PyTorch's ``Conv1d`` layout.
    """

    kind = "wavenet"

    @staticmethod
    def default_config():
        return dict(levels=LEVELS, channels=32, skip_channels=64,
                    head_channels=128, layers=10, stacks=1, kernel=2,
                    first_kernel=2, loss_from_start=False)

    def __init__(self, config=None, params=None, seed=0):
        cfg = self.default_config()
        unknown = sorted(set(config or {}) - set(cfg))
        if unknown:
            raise ValueError(
                f"unknown WaveNet config keys {unknown}; known keys: {sorted(cfg)}"
            )
        cfg.update(config or {})
        _check_config(cfg)
        self.config = cfg
        self.levels = cfg["levels"]
        self._build()
        self.params = self.init_params(seed) if params is None else dict(params)
        self._check_params()

    # ---- structure ----------------------------------------------------------

    def dilations(self):
        """Dilation of every block: ``1, 2, ..., 2^(layers-1)``, ``stacks``
        times."""
        return [2 ** i for i in range(self.config["layers"])] * self.config["stacks"]

    def receptive_field(self):
        """``R = K_0 + (K - 1) * stacks * (2^layers - 1) + 1``.

        The input layer reads ``q[t - K_0 .. t-1]`` and each block of
        dilation ``D`` reaches ``(K - 1) D`` steps further back, so ``y[t]``
        depends on ``q[t - R + 1 .. t-1]``: ``R`` counts those ``R - 1``
        past samples and the predicted one. The logits at ``t`` change
        with ``q[t - R + 1]`` and never with ``q[t - R]`` or ``q[>= t]``.
        """
        cfg = self.config
        return (cfg["first_kernel"]
                + (cfg["kernel"] - 1) * cfg["stacks"] * (2 ** cfg["layers"] - 1) + 1)

    def loss_start(self):
        """First position the loss scores: ``R - 1``, or 0 with
        ``loss_from_start``."""
        return 0 if self.config["loss_from_start"] else self.receptive_field() - 1

    def _build(self):
        cfg = self.config
        width, skip = cfg["channels"], cfg["skip_channels"]
        self.input = OneHotCausalConv1d("input", self.levels, width,
                                        cfg["first_kernel"])
        self.blocks = []
        dilations = self.dilations()
        for index, dilation in enumerate(dilations):
            last = index == len(dilations) - 1
            self.blocks.append((
                CausalConv1d(f"block{index}.dilated", width, 2 * width,
                             cfg["kernel"], dilation),
                None if last else CausalConv1d(f"block{index}.residual", width,
                                               width),
                CausalConv1d(f"block{index}.skip", width, skip),
            ))
        self.head1 = CausalConv1d("head1", skip, cfg["head_channels"])
        self.head2 = CausalConv1d("head2", cfg["head_channels"], self.levels)
        self.layers = [self.input]
        self.layers += [layer for block in self.blocks for layer in block
                        if layer is not None]
        self.layers += [self.head1, self.head2]

    # ---- parameters -------------------------------------------------------

    def init_params(self, seed=0, dtype=np.float32):
        """Fresh parameters from ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        params = {}
        for layer in self.layers:
            params.update(layer.init(rng, dtype))
        return params

    def _check_params(self):
        shapes = {k: v.shape for k, v in self.init_params(0).items()}
        missing = sorted(set(shapes) - set(self.params))
        extra = sorted(set(self.params) - set(shapes))
        if missing or extra:
            raise ValueError(
                f"parameters do not match a wavenet with config {self.config}: "
                f"missing {missing}, unexpected {extra}"
            )
        dtypes = {v.dtype for v in self.params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)).type not in (np.float32,
                                                                np.float64):
            raise TypeError(
                f"parameters must all be float32 or all float64, got {dtypes}")
        for name, value in self.params.items():
            if value.shape != shapes[name]:
                raise ValueError(
                    f"parameter {name} has shape {value.shape}, this config "
                    f"needs {shapes[name]}"
                )

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def astype(self, dtype):
        """A copy of the model with parameters in ``dtype`` (float64 for
        gradient checks)."""
        params = {k: v.astype(dtype) for k, v in self.params.items()}
        return type(self)(self.config, params)

    def n_params(self):
        """Number of trainable scalars."""
        return int(sum(v.size for v in self.params.values()))

    # ---- forward and backward ---------------------------------------------

    @staticmethod
    def _head_dense(layer, params):
        # A 1x1 convolution on rows (M, C_in) -> (M, C_out): the weights
        # (C_out, C_in, 1) seen as a dense (C_out, C_in) matrix.
        w = params[layer.w_name]
        return w.reshape(w.shape[0], w.shape[1]), params[layer.b_name]

    def forward(self, params, q, start=0):
        """Logits of the samples ``q[:, start:]``.

        Args:
            params: the parameter dict.
            q: ``(N, T)`` integer codes.
            start: first position whose logits are computed (the skip sum and
                the head run on positions ``start .. T-1`` only).

        Returns:
            logits: ``(N (T - start), V)`` rows, row ``n (T - start) + t -
            start`` for sample ``q[n, t]``; and the cache for
            :meth:`backward`.
        """
        length = q.shape[1]
        h, input_cache = self.input.forward(params, q)
        skip_sum = None
        caches = []
        for dilated, residual, skip in self.blocks:
            z, dilated_cache = dilated.forward(params, h)
            g, gate_cache = gate_forward(z, axis=0)
            s, skip_cache = skip.forward(params, g[:, :, start:])
            if skip_sum is None:
                skip_sum = s
            else:
                skip_sum += s
            residual_cache = None
            if residual is not None:
                # Not in place: with K = 1 the dilated convolution's cache
                # is h itself.
                r, residual_cache = residual.forward(params, g)
                h = h + r
            caches.append((dilated_cache, gate_cache, skip_cache, residual_cache))

        a, relu1_cache = relu_forward(skip_sum)
        rows = a.reshape(a.shape[0], -1).T
        w1, b1 = self._head_dense(self.head1, params)
        w2, b2 = self._head_dense(self.head2, params)
        hidden = rows @ w1.T
        hidden += b1
        hidden, relu2_cache = relu_forward(hidden)
        logits = hidden @ w2.T
        logits += b2
        cache = (length, start, input_cache, caches, a.shape, relu1_cache, rows,
                 relu2_cache, hidden)
        return logits, cache

    def backward(self, params, cache, dlogits, input_grad=False):
        """Gradients of every parameter given ``dlogits`` ``(N (T - start), V)``
        (a dict shaped like ``params``).

        With ``input_grad``, also the gradient with respect to the one-hot
        codes ``(N, V, T)`` (see
        :func:`npar.ops.onehot_conv1d.onehot_conv1d_input_gradient`), which
        shows what each logit reads.
        """
        (length, start, input_cache, caches, skip_shape, relu1_cache, rows,
         relu2_cache, hidden) = cache
        w1, _ = self._head_dense(self.head1, params)
        w2, _ = self._head_dense(self.head2, params)
        grads = {}

        dhidden = dlogits @ w2
        grads[self.head2.w_name] = (dlogits.T @ hidden)[:, :, None]
        grads[self.head2.b_name] = dlogits.sum(axis=0)
        dhidden = relu_backward(dhidden, relu2_cache)
        drows = dhidden @ w1
        grads[self.head1.w_name] = (dhidden.T @ rows)[:, :, None]
        grads[self.head1.b_name] = dhidden.sum(axis=0)
        dskip = relu_backward(np.ascontiguousarray(drows.T).reshape(skip_shape),
                              relu1_cache)

        dh = None
        for (dilated, residual, skip), block_cache in zip(reversed(self.blocks),
                                                          reversed(caches)):
            dilated_cache, gate_cache, skip_cache, residual_cache = block_cache
            dg_skip, g = skip.backward(params, skip_cache, dskip)
            grads.update(g)
            if residual is not None:
                dg, g = residual.backward(params, residual_cache, dh)
                grads.update(g)
                dg[:, :, start:] += dg_skip
            elif start == 0:
                dg = dg_skip
            else:
                dg = np.zeros((dg_skip.shape[0], dg_skip.shape[1], length),
                              dtype=dg_skip.dtype)
                dg[:, :, start:] = dg_skip
            dz = gate_backward(dg, gate_cache)
            dh_in, g = dilated.backward(params, dilated_cache, dz)
            grads.update(g)
            # The residual path carries dh straight through to the block below.
            if dh is None:
                dh = dh_in
            else:
                dh += dh_in

        grads.update(self.input.backward(params, input_cache, dh))
        if input_grad:
            return grads, onehot_conv1d_input_gradient(
                dh, params[self.input.w_name], self.input.delay)
        return grads

    def _check_codes(self, q):
        return check_codes(q, self.levels)

    def loss_and_grads(self, q, params=None):
        """Mean negative log-likelihood (nats per sample) over the positions
        ``t >= loss_start()`` of every clip, and its gradient.

        Args:
            q: ``(N, T)`` integer codes, ``T > loss_start()``.

        Returns:
            ``(loss, grads)`` with ``grads`` a dict shaped like ``params``.
        """
        params = self.params if params is None else params
        q = self._check_codes(q)
        start = self.loss_start()
        if q.shape[1] <= start:
            raise ValueError(
                f"clips of {q.shape[1]} samples are too short: the loss starts "
                f"at position {start} (receptive field {self.receptive_field()}); "
                f"use clips of at least {start + 1} samples or loss_from_start"
            )
        logits, cache = self.forward(params, q, start)
        targets = q[:, start:].reshape(-1)
        nll, ce_cache = softmax_cross_entropy_forward(logits, targets)
        loss = float(nll.mean())
        dnll = np.full(nll.shape, 1.0 / nll.size, dtype=nll.dtype)
        dlogits = softmax_cross_entropy_backward(dnll, ce_cache)
        return loss, self.backward(params, cache, dlogits)

    def logits(self, q, start=0):
        """Logits ``(N, T - start, V)`` of the samples ``q[:, start:]``, for
        integer codes ``q`` ``(N, T)``."""
        q = self._check_codes(q)
        if not (isinstance(start, (int, np.integer)) and 0 <= start < q.shape[1]):
            raise ValueError(
                f"start must be an integer in 0..{q.shape[1] - 1}, got {start!r}")
        rows, _ = self.forward(self.params, q, start)
        return rows.reshape(q.shape[0], q.shape[1] - start, self.levels)

    def log_prob(self, q, start=0):
        """Log-likelihood in nats, ``(N,)`` float64, of ``q[:, start:]`` given
        what comes before (zero history before the clip)."""
        logp = log_softmax(self.logits(q, start).astype(np.float64), axis=-1)
        picked = np.take_along_axis(
            logp, q[:, start:, None].astype(np.int64), axis=-1)
        return picked[..., 0].sum(axis=1)

    def nll_sum(self, q, start=None):
        """Summed negative log-likelihood (nats, float64) of ``q[:, start:]``
        (``start`` defaults to :meth:`loss_start`) and the number of samples
        it covers."""
        q = self._check_codes(q)
        start = self.loss_start() if start is None else start
        if not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"start must be an integer >= 0, got {start!r}")
        if q.shape[1] <= start:
            raise ValueError(
                f"clips of {q.shape[1]} samples end before position {start}")
        rows, _ = self.forward(self.params, q, start)
        nll, _ = softmax_cross_entropy_forward(rows, q[:, start:].reshape(-1))
        return float(nll.astype(np.float64).sum()), int(nll.size)
