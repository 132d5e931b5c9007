"""PyTorch twins of npar's models, built from the same parameter dict.

Each twin is an ``torch.nn.Module`` whose parameters carry npar's names
(dots replaced by underscores in the module tree, see :func:`state_dict_names`)
and whose forward returns logits in npar's row layout, so that logits and
gradients can be compared entry by entry. Masks are applied in the forward
pass (``w * mask``), exactly as npar does, so masked weights get zero
gradient in both.

Requires the optional ``torch`` extra.
"""

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover - exercised without torch
    raise ImportError(
        "npar.verify.torch_twins needs PyTorch: pip install 'npar[torch]'"
    ) from error


def _conv(x, layer, params_t):
    w = params_t[layer.w_name]
    if layer.mask is not None:
        w = w * torch.as_tensor(layer.mask, dtype=w.dtype)
    top, bottom, left, right = layer.padding
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, w, params_t.get(layer.b_name), dilation=layer.dilation)


def _dense(x, layer, params_t):
    w = params_t[layer.w_name]
    if layer.mask is not None:
        w = w * torch.as_tensor(layer.mask, dtype=w.dtype)
    return F.linear(x, w, params_t.get(layer.b_name))


def _gate(x):
    a, b = torch.chunk(x, 2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class TorchPixelCNN(torch.nn.Module):
    """Twin of :class:`npar.models.pixelcnn.GatedPixelCNN` or
    :class:`npar.models.pixelcnn.PixelCNN` (chosen by ``model.kind``)."""

    def __init__(self, model, params=None):
        super().__init__()
        self.model = model
        params = model.params if params is None else params
        self.names = list(params)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(np.array(params[k])))
             for k in self.names])

    def params_t(self):
        return dict(zip(self.names, self.weights))

    def forward(self, x):
        """``x`` uint8 ``(N, C, H, W)`` -> logits rows ``(N H W, C V)``."""
        model = self.model
        p = self.params_t()
        dtype = self.weights[0].dtype
        codes = torch.as_tensor(np.asarray(x)).long()
        x = codes.to(dtype) * (2.0 / (model.levels - 1)) - 1
        if model.embedding:
            from npar.verify.torch_modules import embed_levels

            x = embed_levels(codes, x, p[model.embed.w_name])
        if model.kind == "gated_pixelcnn":
            v = h = x
            for index, (v_conv, h_conv, v_to_h, h_out) in enumerate(model.stack):
                v_pre = _conv(v, v_conv, p)
                shifted = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]
                h_pre = _conv(h, h_conv, p) + _conv(shifted, v_to_h, p)
                v = _gate(v_pre)
                h_res = _conv(_gate(h_pre), h_out, p)
                h = h_res if index == 0 else h + h_res
            features = h
        else:
            features = _conv(x, model.first, p)
            for conv_a, conv_b in model.blocks:
                a = _conv(torch.relu(features), conv_a, p)
                features = features + _conv(torch.relu(a), conv_b, p)
        rows = torch.relu(features).permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        head1, head2 = model.head
        return _dense(torch.relu(_dense(rows, head1, p)), head2, p)

    def loss(self, x):
        """Mean negative log-likelihood per sub-pixel, nats."""
        rows = self.forward(x).reshape(-1, self.model.levels)
        targets = torch.as_tensor(
            np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1)).reshape(-1)
            .astype(np.int64))
        return F.cross_entropy(rows, targets)

    def grads(self):
        """Gradients after ``loss(x).backward()``, as a dict of numpy arrays."""
        return {k: w.grad.detach().numpy().copy() for k, w in zip(self.names,
                                                                   self.weights)}


class TorchWaveNet(torch.nn.Module):
    """Twin of :class:`npar.models.wavenet.WaveNet`, with the same parameter
    names and the same layout of every weight (``torch.nn.Conv1d``'s).

    The input layer, a causal convolution of the delayed one-hot codes,
    is computed as ``K_0`` embedding look-ups (the one-hot product, without
    the ``V``-wide matrix), the dilated convolutions as ``F.conv1d`` on the
    input padded with ``D (K - 1)`` zeros on the left.
    """

    def __init__(self, model, params=None):
        super().__init__()
        self.model = model
        params = model.params if params is None else params
        self.names = list(params)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(np.array(params[k])))
             for k in self.names])

    def params_t(self):
        return dict(zip(self.names, self.weights))

    def forward(self, q, start=0):
        """``q`` integer codes ``(N, T)`` -> logits rows ``(N (T - start), V)``,
        row ``n (T - start) + t - start`` for ``q[n, t]`` (npar's order)."""
        model = self.model
        p = self.params_t()
        q = torch.as_tensor(np.asarray(q, dtype=np.int64))
        w_in, b_in = p["input.w"], p["input.b"]
        width, levels, k0 = w_in.shape
        # Tap k reads q[t - 1 - (K_0 - 1 - k)] = q_pad[t + k], with q_pad the
        # codes after K_0 copies of index `levels`, a zero row of the table:
        # the one-hot vector of "before the clip".
        length = q.shape[1]
        q_pad = F.pad(q, (k0, 0), value=levels)
        h = b_in
        for k in range(k0):
            table = torch.cat([w_in[:, :, k].T, w_in.new_zeros(1, width)])
            h = h + F.embedding(q_pad[:, k:k + length], table)
        h = h.permute(0, 2, 1)

        skip_sum = 0
        for dilated, residual, skip in model.blocks:
            pad = dilated.dilation * (dilated.kernel - 1)
            z = F.conv1d(F.pad(h, (pad, 0)), p[dilated.w_name], p[dilated.b_name],
                         dilation=dilated.dilation)
            g = _gate(z)
            skip_sum = skip_sum + F.conv1d(g[:, :, start:], p[skip.w_name],
                                           p[skip.b_name])
            if residual is not None:
                h = h + F.conv1d(g, p[residual.w_name], p[residual.b_name])
        a = F.conv1d(torch.relu(skip_sum), p["head1.w"], p["head1.b"])
        logits = F.conv1d(torch.relu(a), p["head2.w"], p["head2.b"])
        return logits.permute(0, 2, 1).reshape(-1, logits.shape[1])

    def loss(self, q, start=None):
        """Mean negative log-likelihood per sample (nats) over ``t >= start``
        (default: the model's ``loss_start()``)."""
        start = self.model.loss_start() if start is None else start
        rows = self.forward(q, start)
        targets = torch.as_tensor(np.asarray(q)[:, start:].reshape(-1)
                                  .astype(np.int64))
        return F.cross_entropy(rows, targets)

    def grads(self):
        """Gradients after ``loss(q).backward()``, as a dict of numpy arrays."""
        return {k: w.grad.detach().numpy().copy() for k, w in zip(self.names,
                                                                   self.weights)}
