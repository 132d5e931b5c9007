"""Device versions of the models' forward and backward passes.

Each class here wraps a CPU model of :mod:`npar.models` (its config and its
layer objects, which hold the static shapes, paddings and masks) and runs
the same computation, step by step and in the same order, on device arrays:
:class:`DeviceGatedPixelCNN` mirrors
:class:`npar.models.pixelcnn.GatedPixelCNN`, :class:`DevicePixelCNN` the
plain :class:`~npar.models.pixelcnn.PixelCNN` and :class:`DeviceWaveNet`
:class:`npar.models.wavenet.WaveNet`. Read them side by side with the CPU
classes; the names of the intermediate maps are the same.

Parameters and gradients are :class:`npar.cuda.optim.FlatArrays`; every
backward pass writes each parameter's gradient into its view of the
gradient buffer (each parameter is used by exactly one layer, so every view
is written once per step). :meth:`loss_and_grads` leaves the summed loss on
the device; nothing is copied to the host but the batch going in.
"""

import numpy as np
from numba import cuda

from npar.cuda import elementwise as ew
from npar.cuda.conv import (
    conv1d_backward,
    conv1d_forward,
    conv2d_backward,
    conv2d_forward,
    dense_backward,
    dense_forward,
)
from npar.cuda.linalg import row_sums, sum_all
from npar.cuda.runtime import empty, launch_plan, to_device
from npar.cuda.softmax import (
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN, check_images
from npar.models.wavenet import WaveNet


def _launch(kernel, n_items, *args):
    plan = launch_plan()
    kernel[plan.blocks(n_items, plan.threads), plan.threads](*args)


class _DeviceModel:
    """What the device models share: masks on the device, layer helpers."""

    def __init__(self, model):
        self.model = model
        self.dtype = np.dtype(model.dtype)
        self.masks = {}
        for layer in model.layers:
            mask = getattr(layer, "mask", None)
            if mask is not None:
                self.masks[layer.w_name] = to_device(mask.astype(self.dtype))

    # ---- layers -------------------------------------------------------------

    def conv2d(self, layer, params, x):
        bias = params[layer.b_name] if layer.bias else None
        return conv2d_forward(x, params[layer.w_name], bias, layer.padding,
                              layer.dilation, self.masks.get(layer.w_name),
                              layout="CNHW")

    def conv2d_back(self, layer, cache, dy, grads, need_dx=True):
        db_out = grads[layer.b_name] if layer.bias else None
        dx, _, _ = conv2d_backward(dy, cache, need_dx, dw_out=grads[layer.w_name],
                                   db_out=db_out)
        return dx

    def dense(self, layer, params, x, layout):
        # A Dense layer, or a 1x1 CausalConv1d read as one ((C_out, C_in, 1)).
        w = params[layer.w_name]
        w = w.reshape(w.shape[0], w.shape[1])
        bias = params.get(layer.b_name)
        return dense_forward(x, w, bias, self.masks.get(layer.w_name), layout)

    def dense_back(self, layer, cache, dy, grads, need_dx=True):
        dw_out = grads[layer.w_name]
        dw_out = dw_out.reshape(dw_out.shape[0], dw_out.shape[1])
        db_out = grads.get(layer.b_name)
        dx, _, _ = dense_backward(dy, cache, need_dx, dw_out=dw_out, db_out=db_out)
        return dx

    def loss_rows(self, logits, targets, count_out):
        """Summed NLL of the rows into ``count_out`` (float64, on the
        device) and ``dlogits`` of the mean NLL."""
        levels = self.model.levels
        rows = logits.reshape(logits.size // levels, levels)
        nll, ce_cache = softmax_cross_entropy_forward(rows, targets)
        sum_all(nll, out=count_out)
        dlogits = softmax_cross_entropy_backward(1.0 / nll.size, ce_cache)
        return dlogits.reshape(*logits.shape), nll.size


# ---- image models -----------------------------------------------------------


class _DeviceImageModel(_DeviceModel):

    def __init__(self, model):
        if model.config.get("classes", 0):
            raise NotImplementedError(
                "the CUDA backend runs unconditional PixelCNNs only; this model "
                f"has classes = {model.config['classes']} (train it with "
                "--device cpu)"
            )
        super().__init__(model)

    def upload_batch(self, x):
        """Check integer images ``(N, C, H, W)`` and copy them to the device."""
        model = self.model
        check_images(x, model.image_channels, model.levels)
        dtype = np.uint8 if model.levels <= 256 else np.int64
        return to_device(x.astype(dtype, copy=False))

    def forward(self, params, x):
        """Logits ``(N H W, C V)`` of device images ``x``, and the cache
        (:meth:`npar.models.pixelcnn._ImageModel.forward`)."""
        scaled = ew.scale_images(x, self.model.levels, self.dtype)
        features, body_cache = self._body_forward(params, scaled)
        shape = features.shape
        head1, head2 = self.model.head

        a, relu1_cache = ew.relu_forward(features)
        rows = a.reshape(shape[0], a.size // shape[0])
        hidden, head1_cache = self.dense(head1, params, rows, "columns")
        hidden, relu2_cache = ew.relu_forward(hidden)
        logits, head2_cache = self.dense(head2, params, hidden, "rows")
        cache = (shape, body_cache, relu1_cache, head1_cache, relu2_cache,
                 head2_cache)
        return logits, cache

    def backward(self, params, cache, dlogits, grads):
        """Write every parameter's gradient into ``grads`` (FlatArrays)."""
        shape, body_cache, relu1_cache, head1_cache, relu2_cache, head2_cache = cache
        head1, head2 = self.model.head

        dhidden = self.dense_back(head2, head2_cache, dlogits, grads)
        dhidden = ew.relu_backward(dhidden, relu2_cache)
        drows = self.dense_back(head1, head1_cache, dhidden, grads)
        dfeatures = ew.relu_backward(drows.reshape(*shape), relu1_cache)
        self._body_backward(params, body_cache, dfeatures, grads)

    def loss_and_grads(self, params, x, grads, loss_out):
        """Mean NLL per sub-pixel of device images ``x``: its sum goes to
        ``loss_out[0]`` (float64, on the device), the gradient into
        ``grads``. Returns the number of sub-pixels (the mean's divisor)."""
        logits, cache = self.forward(params, x)
        dlogits, count = self.loss_rows(logits, ew.pixel_targets(x), loss_out)
        self.backward(params, cache, dlogits, grads)
        return count


class DeviceGatedPixelCNN(_DeviceImageModel):
    """:class:`npar.models.pixelcnn.GatedPixelCNN` on the device."""

    def _body_forward(self, params, x):
        v, h = x, x
        caches = []
        for index, (v_conv, h_conv, v_to_h, h_out) in enumerate(self.model.stack):
            v_pre, v_cache = self.conv2d(v_conv, params, v)
            link, link_cache = self.conv2d(v_to_h, params,
                                           ew.shift_down_forward(v_pre))
            h_pre, h_cache = self.conv2d(h_conv, params, h)
            ew.add(h_pre, link, out=h_pre)
            v, v_gate_cache = ew.gate_forward(v_pre, axis=0)
            h_gated, h_gate_cache = ew.gate_forward(h_pre, axis=0)
            h_res, out_cache = self.conv2d(h_out, params, h_gated)
            h = h_res if index == 0 else ew.add(h, h_res)
            caches.append((v_cache, link_cache, h_cache, v_gate_cache,
                           h_gate_cache, out_cache))
        return h, caches

    def _body_backward(self, params, caches, dh, grads):
        dv = None
        for index in reversed(range(len(self.model.stack))):
            v_conv, h_conv, v_to_h, h_out = self.model.stack[index]
            (v_cache, link_cache, h_cache, v_gate_cache, h_gate_cache,
             out_cache) = caches[index]

            dh_gated = self.conv2d_back(h_out, out_cache, dh, grads)
            dh_pre = ew.gate_backward(dh_gated, h_gate_cache)
            dh_in = self.conv2d_back(h_conv, h_cache, dh_pre, grads,
                                     need_dx=index > 0)
            dlink = self.conv2d_back(v_to_h, link_cache, dh_pre, grads)
            dv_pre = ew.shift_down_backward(dlink)
            if dv is not None:
                ew.add(dv_pre, ew.gate_backward(dv, v_gate_cache), out=dv_pre)
            dv = self.conv2d_back(v_conv, v_cache, dv_pre, grads, need_dx=index > 0)
            # The residual carries dh straight through to the layer below.
            if index > 0:
                dh = ew.add(dh, dh_in)


class DevicePixelCNN(_DeviceImageModel):
    """:class:`npar.models.pixelcnn.PixelCNN` on the device."""

    def _body_forward(self, params, x):
        model = self.model
        h, first_cache = self.conv2d(model.first, params, x)
        caches = []
        for conv_a, conv_b in model.blocks:
            a, relu_a = ew.relu_forward(h)
            a, cache_a = self.conv2d(conv_a, params, a)
            b, relu_b = ew.relu_forward(a)
            b, cache_b = self.conv2d(conv_b, params, b)
            h = ew.add(h, b)
            caches.append((relu_a, cache_a, relu_b, cache_b))
        return h, (first_cache, caches)

    def _body_backward(self, params, cache, dh, grads):
        model = self.model
        first_cache, caches = cache
        for (conv_a, conv_b), (relu_a, cache_a, relu_b, cache_b) in zip(
                reversed(model.blocks), reversed(caches)):
            db = self.conv2d_back(conv_b, cache_b, dh, grads)
            da = self.conv2d_back(conv_a, cache_a, ew.relu_backward(db, relu_b),
                                  grads)
            dh = ew.add(dh, ew.relu_backward(da, relu_a))
        self.conv2d_back(model.first, first_cache, dh, grads, need_dx=False)


# ---- WaveNet ----------------------------------------------------------------


@cuda.jit
def _onehot_forward(q, w, b, delay, y):
    # y[o, n, t] = b[o] + sum_k w[o, q[n, t - delay - (K-1-k)], k], one
    # thread per output entry (npar.ops.onehot_conv1d).
    c_out = w.shape[0]
    k_size = w.shape[2]
    n_batch = q.shape[0]
    length = q.shape[1]
    for idx in range(cuda.grid(1), c_out * n_batch * length, cuda.gridsize(1)):
        t = idx % length
        n = (idx // length) % n_batch
        o = idx // (length * n_batch)
        acc = b[o]
        for k in range(k_size):
            s = t - delay - (k_size - 1 - k)
            if s >= 0:
                acc += w[o, q[n, s], k]
        y[o, n, t] = acc


@cuda.jit
def _onehot_backward(q, dy, delay, dw):
    # dw[o, v, k] = sum of dy[o, n, t] over the (n, t) whose tap k read code
    # v. One thread owns the column (o, :, k) and walks every (n, t) in the
    # CPU kernel's order, so no two threads write one entry (no atomics).
    c_out = dw.shape[0]
    levels = dw.shape[1]
    k_size = dw.shape[2]
    n_batch = q.shape[0]
    length = q.shape[1]
    for idx in range(cuda.grid(1), c_out * k_size, cuda.gridsize(1)):
        o = idx // k_size
        k = idx % k_size
        for v in range(levels):
            dw[o, v, k] = 0.0
        for n in range(n_batch):
            for t in range(length):
                s = t - delay - (k_size - 1 - k)
                if s >= 0:
                    dw[o, q[n, s], k] += dy[o, n, t]


@cuda.jit
def _slice_time(x, start, y):
    # y[c, n, t] = x[c, n, start + t] for x (C, N, T), y (C, N, T - start).
    length = x.shape[2]
    kept = y.shape[2]
    n_batch = y.shape[1]
    for idx in range(cuda.grid(1), y.shape[0] * n_batch * kept, cuda.gridsize(1)):
        t = idx % kept
        n = (idx // kept) % n_batch
        c = idx // (kept * n_batch)
        y[c, n, t] = x[c, n, start + t] if start + t < length else 0.0


@cuda.jit
def _add_time_slice(dx, start, dy):
    # dx[c, n, start + t] += dy[c, n, t]: the adjoint of _slice_time, added.
    kept = dy.shape[2]
    n_batch = dy.shape[1]
    for idx in range(cuda.grid(1), dy.shape[0] * n_batch * kept, cuda.gridsize(1)):
        t = idx % kept
        n = (idx // kept) % n_batch
        c = idx // (kept * n_batch)
        dx[c, n, start + t] += dy[c, n, t]


@cuda.jit
def _code_targets(q, start, targets):
    # targets[n (T - start) + t] = q[n, start + t], the order of the logits' rows.
    kept = q.shape[1] - start
    for idx in range(cuda.grid(1), targets.shape[0], cuda.gridsize(1)):
        n = idx // kept
        t = idx % kept
        targets[idx] = q[n, start + t]


def onehot_conv1d_forward(q, w, b, delay=1):
    """Device twin of :func:`npar.ops.onehot_conv1d.onehot_conv1d_forward`:
    integer codes ``q`` ``(N, T)`` -> ``y`` ``(C_out, N, T)`` and the cache."""
    y = empty((w.shape[0], q.shape[0], q.shape[1]), w.dtype)
    _launch(_onehot_forward, y.size, q, w, b, int(delay), y)
    return y, (q, w.shape, w.dtype, int(delay))


def onehot_conv1d_backward(dy, cache, dw_out=None, db_out=None):
    """Device twin of :func:`npar.ops.onehot_conv1d.onehot_conv1d_backward`:
    ``(dw (C_out, V, K), db (C_out,))``."""
    q, w_shape, dtype, delay = cache
    dw = empty(w_shape, dtype) if dw_out is None else dw_out
    _launch(_onehot_backward, w_shape[0] * w_shape[2], q, dy, delay, dw)
    db = row_sums(dy.reshape(w_shape[0], dy.size // w_shape[0]), out=db_out)
    return dw, db


def slice_time(x, start):
    """``x[:, :, start:]`` of a device ``(C, N, T)`` map, contiguous."""
    y = empty((x.shape[0], x.shape[1], x.shape[2] - start), x.dtype)
    _launch(_slice_time, y.size, x, int(start), y)
    return y


class DeviceWaveNet(_DeviceModel):
    """:class:`npar.models.wavenet.WaveNet` on the device."""

    def upload_batch(self, q):
        """Check integer codes ``(N, T)`` and copy them to the device."""
        q = self.model._check_codes(q)
        start = self.model.loss_start()
        if q.shape[1] <= start:
            raise ValueError(
                f"clips of {q.shape[1]} samples are too short: the loss starts "
                f"at position {start} (receptive field "
                f"{self.model.receptive_field()}); use clips of at least "
                f"{start + 1} samples or loss_from_start"
            )
        return to_device(q)

    def conv1d(self, layer, params, x):
        return conv1d_forward(x, params[layer.w_name], params[layer.b_name],
                              layer.dilation, layout="CNT")

    def conv1d_back(self, layer, cache, dy, grads, need_dx=True):
        dx, _, _ = conv1d_backward(dy, cache, need_dx, dw_out=grads[layer.w_name],
                                   db_out=grads[layer.b_name])
        return dx

    def forward(self, params, q, start=0):
        """Logits ``(N (T - start), V)`` of device codes ``q`` ``(N, T)``, and
        the cache (:meth:`npar.models.wavenet.WaveNet.forward`)."""
        model = self.model
        length = q.shape[1]
        inp = model.input
        h, input_cache = onehot_conv1d_forward(q, params[inp.w_name],
                                               params[inp.b_name], inp.delay)
        skip_sum = None
        caches = []
        for dilated, residual, skip in model.blocks:
            z, dilated_cache = self.conv1d(dilated, params, h)
            g, gate_cache = ew.gate_forward(z, axis=0)
            g_kept = g if start == 0 else slice_time(g, start)
            s, skip_cache = self.conv1d(skip, params, g_kept)
            skip_sum = s if skip_sum is None else ew.add(skip_sum, s)
            residual_cache = None
            if residual is not None:
                r, residual_cache = self.conv1d(residual, params, g)
                h = ew.add(h, r)
            caches.append((dilated_cache, gate_cache, skip_cache, residual_cache))

        a, relu1_cache = ew.relu_forward(skip_sum)
        rows = a.reshape(a.shape[0], a.size // a.shape[0])
        hidden, head1_cache = self.dense(model.head1, params, rows, "columns")
        hidden, relu2_cache = ew.relu_forward(hidden)
        logits, head2_cache = self.dense(model.head2, params, hidden, "rows")
        cache = (length, start, input_cache, caches, a.shape, relu1_cache,
                 head1_cache, relu2_cache, head2_cache)
        return logits, cache

    def backward(self, params, cache, dlogits, grads):
        """Write every parameter's gradient into ``grads`` (FlatArrays)."""
        model = self.model
        (length, start, input_cache, caches, skip_shape, relu1_cache,
         head1_cache, relu2_cache, head2_cache) = cache

        dhidden = self.dense_back(model.head2, head2_cache, dlogits, grads)
        dhidden = ew.relu_backward(dhidden, relu2_cache)
        drows = self.dense_back(model.head1, head1_cache, dhidden, grads)
        dskip = ew.relu_backward(drows.reshape(*skip_shape), relu1_cache)

        dh = None
        for (dilated, residual, skip), block_cache in zip(reversed(model.blocks),
                                                          reversed(caches)):
            dilated_cache, gate_cache, skip_cache, residual_cache = block_cache
            dg_skip = self.conv1d_back(skip, skip_cache, dskip, grads)
            if residual is not None:
                dg = self.conv1d_back(residual, residual_cache, dh, grads)
                if start == 0:
                    ew.add(dg, dg_skip, out=dg)
                else:
                    _launch(_add_time_slice, dg_skip.size, dg, start, dg_skip)
            elif start == 0:
                dg = dg_skip
            else:
                dg = ew.zeros((dg_skip.shape[0], dg_skip.shape[1], length),
                              self.dtype)
                _launch(_add_time_slice, dg_skip.size, dg, start, dg_skip)
            dz = ew.gate_backward(dg, gate_cache)
            dh_in = self.conv1d_back(dilated, dilated_cache, dz, grads)
            # The residual path carries dh straight through to the block below.
            dh = dh_in if dh is None else ew.add(dh, dh_in)

        inp = model.input
        onehot_conv1d_backward(dh, input_cache, dw_out=grads[inp.w_name],
                               db_out=grads[inp.b_name])

    def loss_and_grads(self, params, q, grads, loss_out):
        """Mean NLL per sample over ``t >= loss_start()`` of device codes
        ``q``: its sum goes to ``loss_out[0]`` (float64, on the device), the
        gradient into ``grads``. Returns the number of scored samples."""
        start = self.model.loss_start()
        logits, cache = self.forward(params, q, start)
        targets = empty((q.shape[0] * (q.shape[1] - start),), np.int64)
        _launch(_code_targets, targets.size, q, start, targets)
        dlogits, count = self.loss_rows(logits, targets, loss_out)
        self.backward(params, cache, dlogits, grads)
        return count


_DEVICE_MODELS = {GatedPixelCNN: DeviceGatedPixelCNN, PixelCNN: DevicePixelCNN,
                  WaveNet: DeviceWaveNet}


def device_model(model):
    """The device twin of an npar model (a GatedPixelCNN, PixelCNN or
    WaveNet)."""
    if model.kind != "wavenet":
        from npar.models.pixelcnn import require_no_embedding

        require_no_embedding(model, "the CUDA backend")
    for cls, device_cls in _DEVICE_MODELS.items():
        if type(model) is cls:
            return device_cls(model)
    raise NotImplementedError(
        f"the CUDA backend has no device version of {type(model).__name__}; "
        f"it runs {sorted(c.__name__ for c in _DEVICE_MODELS)}"
    )

