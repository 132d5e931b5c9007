"""Idiomatic PyTorch versions of npar's models, for weight exchange.

These modules are what a PyTorch user would write: ``nn.Conv2d`` /
``nn.Conv1d`` children with ``weight`` and ``bias``, held in an
``nn.ModuleList`` called ``layers`` (Gated PixelCNN) or ``blocks`` (plain
PixelCNN, WaveNet), so their ``state_dict`` names read
``layers.0.v_conv.weight``, ``blocks.3.dilated_conv.bias``, ``head1.bias``
... :mod:`npar.verify.interop` maps these names to npar's (``l0.v.w``,
``block3.dilated.b`` ...) and back; the table is in ``docs/interop.md``.

They are written from the papers, not from npar's layer objects: the
causal masks are rebuilt here from the raster-order rule (a tap is visible
when it comes before the centre, and the centre tap only for earlier
colour groups, or the same group with mask type B), so a test that holds
these modules equal to npar checks npar's masks too. Masks are
non-persistent buffers (they follow from the configuration and are not in
the ``state_dict``) and are applied in the forward pass, ``weight * mask``,
so masked taps receive exactly zero gradient, as in npar.

PixelCNN inputs are integer images ``(N, C, H, W)`` in ``0..V-1``, scaled
inside the module exactly as npar does, ``x * 2 / (V - 1) - 1``; the output
is logits ``(N, C, H, W, V)``. WaveNet takes codes ``(N, T)`` and returns
logits ``(N, T, V)``.

Requires the optional ``torch`` extra.
"""

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as error:  # pragma: no cover - exercised without torch
    raise ImportError(
        "npar.verify.torch_modules needs PyTorch: pip install 'npar[torch]'"
    ) from error


def colour_groups(channels, groups):
    """Colour group of each of ``channels`` channels: contiguous equal blocks.

    Returns:
        ``(channels,)`` int64, e.g. ``[0, 0, 1, 1, 2, 2]`` for 6 channels and
        3 groups.
    """
    return np.arange(channels) * groups // channels


def raster_mask(c_out, c_in, kernel, centre, mask_type, out_groups, in_groups):
    """Causal mask ``(C_out, C_in, K_h, K_w)`` by the raster-order rule.

    A tap ``(p, q)`` before the centre ``(c_h, c_w)`` in raster order is
    visible; the centre is visible from input group ``g_c`` to output group
    ``g_o`` when ``g_c < g_o`` (type A) or ``g_c <= g_o`` (type B); taps
    after the centre are hidden.
    """
    k_h, k_w = kernel
    mask = np.zeros((c_out, c_in, k_h, k_w))
    g_out = np.asarray(out_groups)[:, None]
    g_in = np.asarray(in_groups)[None, :]
    for p in range(k_h):
        for q in range(k_w):
            if (p, q) < tuple(centre):
                mask[:, :, p, q] = 1.0
            elif (p, q) == tuple(centre):
                visible = g_in < g_out if mask_type == "A" else g_in <= g_out
                mask[:, :, p, q] = visible
    return mask


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with explicit ``(top, bottom, left, right)`` zero
    padding and an optional fixed mask, applied as ``weight * mask``.

    Args:
        c_in, c_out: channel counts.
        kernel: ``(K_h, K_w)``.
        padding: ``(P_t, P_b, P_l, P_r)``.
        mask: ``(C_out, C_in, K_h, K_w)`` array of zeros and ones, or None.
        dtype: ``torch.float32`` or ``torch.float64``.
    """

    def __init__(self, c_in, c_out, kernel, padding=(0, 0, 0, 0), mask=None,
                 dtype=torch.float32):
        super().__init__(c_in, c_out, kernel, dtype=dtype)
        self.causal_padding = tuple(int(v) for v in padding)
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask), dtype=dtype)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        """``x (N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``."""
        top, bottom, left, right = self.causal_padding
        weight = self.weight if self.mask is None else self.weight * self.mask
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, self.bias)


def _gate(x):
    a, b = torch.chunk(x, 2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _shift_down(x):
    # y[:, :, i] = x[:, :, i - 1], row 0 zero.
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def embed_levels(codes, scaled, table):
    """Integer levels ``codes`` and their scaled floats, each ``(N, C, H,
    W)``, and a table ``(C, V, D)`` -> ``(N, C (1 + D), H, W)``: per colour
    ``c`` the channels ``[scaled x_c, table[c, x_c]]``, colours in order."""
    codes = codes.long()
    parts = []
    for c in range(table.shape[0]):
        parts.append(scaled[:, c:c + 1])
        parts.append(table[c][codes[:, c]].permute(0, 3, 1, 2))
    return torch.cat(parts, dim=1)


class LevelEmbedding(nn.Module):
    """A learned ``D``-vector per level and colour, ``weight`` ``(C, V, D)``,
    read beside each scaled value: colour ``c`` becomes the channels
    ``[scaled x_c, weight[c, x_c]]``, colours in order."""

    def __init__(self, colours, levels, dim, dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(colours, levels, dim, dtype=dtype))

    def forward(self, x, scaled):
        """Integer ``x`` and its scaled floats, each ``(N, C, H, W)`` ->
        ``(N, C (1 + D), H, W)`` (:func:`embed_levels`)."""
        return embed_levels(x, scaled, self.weight)


class _ImageModule(nn.Module):
    """Scaling of the input (and the level embedding, if any) and the two
    1x1 output convolutions."""

    def __init__(self, config, dtype):
        super().__init__()
        self.config = dict(config)
        self.image_channels = config["image_channels"]
        self.levels = config["levels"]
        self.embedding = config.get("embedding", 0)
        groups = self.image_channels
        # Channels of the first layer's input, per colour the scaled value and
        # its embedding.
        self.input_channels = groups * (1 + self.embedding)
        if self.embedding:
            self.embed = LevelEmbedding(groups, self.levels, self.embedding, dtype)
        features, hidden = config["channels"], config["head_channels"]
        out = groups * self.levels
        masked = groups > 1
        m1 = raster_mask(hidden, features, (1, 1), (0, 0), "B",
                         colour_groups(hidden, groups),
                         colour_groups(features, groups))
        m2 = raster_mask(out, hidden, (1, 1), (0, 0), "B",
                         np.arange(out) // self.levels,
                         colour_groups(hidden, groups))
        self.head1 = MaskedConv2d(features, hidden, (1, 1),
                                  mask=m1 if masked else None, dtype=dtype)
        self.head2 = MaskedConv2d(hidden, out, (1, 1),
                                  mask=m2 if masked else None, dtype=dtype)

    def scale(self, x):
        """Integer images ``(N, C, H, W)`` -> floats in ``[-1, 1]``."""
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        return x.to(self.head1.weight.dtype) * (2.0 / (self.levels - 1)) - 1.0

    def inputs(self, x):
        """Integer images ``(N, C, H, W)`` -> the first layer's input, the
        scaled values with each level's embedding beside it (if any)."""
        scaled = self.scale(x)
        if not self.embedding:
            return scaled
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        return self.embed(x, scaled)

    def head(self, features):
        """``(N, F, H, W)`` -> logits ``(N, C, H, W, V)``."""
        z = self.head2(torch.relu(self.head1(torch.relu(features))))
        n_batch, _, height, width = z.shape
        z = z.reshape(n_batch, self.image_channels, self.levels, height, width)
        return z.permute(0, 1, 3, 4, 2)

    def loss(self, x, labels=None):
        """Mean negative log-likelihood per sub-pixel (nats) of images ``x``
        (with ``(N,)`` class ``labels`` for a class-conditional model)."""
        logits = self.forward(x) if labels is None else self.forward(x, labels)
        targets = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        return F.cross_entropy(logits.reshape(-1, self.levels),
                               targets.reshape(-1).long())


class GatedLayer(nn.Module):
    """One gated layer with vertical and horizontal stacks (van den Oord et
    al. 2016b, fig. 2): ``v_conv`` ``(K//2+1) x K``, ``h_conv``
    ``1 x (K//2+1)`` masked at its last tap, the link ``v_to_h`` (1x1) from
    the shifted-down vertical pre-activation, and ``h_out`` (1x1)."""

    def __init__(self, c_in, width, kernel, mask_type, groups, residual, dtype,
                 classes=0):
        super().__init__()
        half = kernel // 2
        self.residual = residual
        in_g = colour_groups(c_in, groups)
        gate_g = np.tile(colour_groups(width, groups), 2)
        width_g = colour_groups(width, groups)
        h_mask = raster_mask(2 * width, c_in, (1, half + 1), (0, half), mask_type,
                             gate_g, in_g)
        out_mask = raster_mask(width, width, (1, 1), (0, 0), "B", width_g, width_g)
        self.v_conv = MaskedConv2d(c_in, 2 * width, (half + 1, kernel),
                                   padding=(half, 0, half, half), dtype=dtype)
        self.h_conv = MaskedConv2d(c_in, 2 * width, (1, half + 1),
                                   padding=(0, 0, half, 0), mask=h_mask,
                                   dtype=dtype)
        self.v_to_h = MaskedConv2d(2 * width, 2 * width, (1, 1), dtype=dtype)
        self.h_out = MaskedConv2d(width, width, (1, 1),
                                  mask=out_mask if groups > 1 else None,
                                  dtype=dtype)
        if classes:  # a learned per-class bias of every gate (2016b, eq. 4)
            self.v_class = nn.Linear(classes, 2 * width, bias=False, dtype=dtype)
            self.h_class = nn.Linear(classes, 2 * width, bias=False, dtype=dtype)

    def forward(self, v, h, y=None):
        """``(v, h)`` ``(N, C_in, H, W)`` each, and one-hot classes ``y``
        ``(N, classes)`` or None -> ``(v', h')`` ``(N, F, H, W)``."""
        v_pre = self.v_conv(v)
        if y is not None:
            v_pre = v_pre + self.v_class(y)[:, :, None, None]
        h_pre = self.h_conv(h) + self.v_to_h(_shift_down(v_pre))
        if y is not None:
            h_pre = h_pre + self.h_class(y)[:, :, None, None]
        h_res = self.h_out(_gate(h_pre))
        return _gate(v_pre), (h + h_res if self.residual else h_res)


class TorchGatedPixelCNN(_ImageModule):
    """Gated PixelCNN as an idiomatic ``nn.Module``; same config keys as
    :class:`npar.models.pixelcnn.GatedPixelCNN`."""

    kind = "gated_pixelcnn"

    def __init__(self, config, dtype=torch.float32):
        super().__init__(config, dtype)
        groups, width = self.image_channels, config["channels"]
        self.classes = config.get("classes", 0)
        self.layers = nn.ModuleList()
        for index in range(config["layers"]):
            first = index == 0
            self.layers.append(GatedLayer(
                self.input_channels if first else width, width,
                config["first_kernel"] if first else config["kernel"],
                "A" if first else "B", groups, residual=not first, dtype=dtype,
                classes=self.classes))

    def forward(self, x, labels=None):
        """Integer images ``(N, C, H, W)`` (and ``(N,)`` class ``labels`` for a
        class-conditional model) -> logits ``(N, C, H, W, V)``."""
        v = h = self.inputs(x)
        y = None
        if self.classes:
            if labels is None:
                raise ValueError(f"this model is class-conditional "
                                 f"({self.classes} classes): pass labels")
            labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels)
                                     else labels).long()
            y = F.one_hot(labels, self.classes).to(v.dtype)
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.head(h)


class ResidualBlock(nn.Module):
    """``h + conv_b(relu(conv_a(relu(h))))`` with mask-B ``K x K`` kernels."""

    def __init__(self, width, kernel, groups, dtype):
        super().__init__()
        half = kernel // 2
        g = colour_groups(width, groups)
        mask = raster_mask(width, width, (kernel, kernel), (half, half), "B", g, g)
        pad = (half, half, half, half)
        self.conv_a = MaskedConv2d(width, width, (kernel, kernel), pad, mask,
                                   dtype=dtype)
        self.conv_b = MaskedConv2d(width, width, (kernel, kernel), pad, mask,
                                   dtype=dtype)

    def forward(self, h):
        return h + self.conv_b(torch.relu(self.conv_a(torch.relu(h))))


class TorchPlainPixelCNN(_ImageModule):
    """The plain masked PixelCNN as an idiomatic ``nn.Module``; same config
    keys as :class:`npar.models.pixelcnn.PixelCNN`."""

    kind = "pixelcnn"

    def __init__(self, config, dtype=torch.float32):
        super().__init__(config, dtype)
        groups, width = self.image_channels, config["channels"]
        k0 = config["first_kernel"]
        c_in = self.input_channels
        mask = raster_mask(width, c_in, (k0, k0), (k0 // 2, k0 // 2), "A",
                           colour_groups(width, groups),
                           colour_groups(c_in, groups))
        self.conv_in = MaskedConv2d(c_in, width, (k0, k0), (k0 // 2,) * 4, mask,
                                    dtype=dtype)
        self.blocks = nn.ModuleList(
            [ResidualBlock(width, config["kernel"], groups, dtype)
             for _ in range(config["layers"])])

    def forward(self, x):
        """Integer images ``(N, C, H, W)`` -> logits ``(N, C, H, W, V)``."""
        h = self.conv_in(self.inputs(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


class CausalConv1d(nn.Conv1d):
    """``nn.Conv1d`` padded with ``D (K - 1)`` zeros on the left only, so
    ``y[t]`` reads ``x[t - D (K-1) .. t]``."""

    def forward(self, x):
        """``x (N, C_in, T)`` -> ``(N, C_out, T)``."""
        pad = self.dilation[0] * (self.kernel_size[0] - 1)
        return super().forward(F.pad(x, (pad, 0)))


class ResidualGatedBlock(nn.Module):
    """WaveNet block (van den Oord et al. 2016c, fig. 4): ``dilated_conv``
    (``K`` taps, dilation ``D``) to ``2R`` channels, the gate, then the 1x1
    ``skip_conv`` and, except in the last block, the 1x1 ``residual_conv``."""

    def __init__(self, width, skip, kernel, dilation, residual, dtype):
        super().__init__()
        self.dilated_conv = CausalConv1d(width, 2 * width, kernel,
                                         dilation=dilation, dtype=dtype)
        self.skip_conv = nn.Conv1d(width, skip, 1, dtype=dtype)
        self.residual_conv = (nn.Conv1d(width, width, 1, dtype=dtype) if residual
                              else None)

    def forward(self, h):
        """``h (N, R, T)`` -> ``(h', s)``, ``s (N, S, T)``."""
        g = _gate(self.dilated_conv(h))
        h = h + self.residual_conv(g) if self.residual_conv is not None else None
        return h, self.skip_conv(g)


class TorchWaveNet(nn.Module):
    """WaveNet as an idiomatic ``nn.Module``; same config keys as
    :class:`npar.models.wavenet.WaveNet`.

    The input layer is an ``nn.Conv1d`` of ``first_kernel`` taps over the
    one-hot codes delayed by one step (``F.one_hot``, padded with
    ``first_kernel`` zero columns on the left, last column dropped), so
    ``h[t]`` reads ``q[t - K_0 .. t-1]``. Input codes ``(N, T)``, output
    logits ``(N, T, V)``.
    """

    kind = "wavenet"

    def __init__(self, config, dtype=torch.float32):
        super().__init__()
        self.config = dict(config)
        self.levels = config["levels"]
        width, skip = config["channels"], config["skip_channels"]
        self.input_conv = nn.Conv1d(self.levels, width, config["first_kernel"],
                                    dtype=dtype)
        dilations = [2 ** i for i in range(config["layers"])] * config["stacks"]
        self.blocks = nn.ModuleList(
            [ResidualGatedBlock(width, skip, config["kernel"], dilation,
                                residual=index < len(dilations) - 1, dtype=dtype)
             for index, dilation in enumerate(dilations)])
        self.head1 = nn.Conv1d(skip, config["head_channels"], 1, dtype=dtype)
        self.head2 = nn.Conv1d(config["head_channels"], self.levels, 1, dtype=dtype)

    def loss_start(self):
        """First scored position: the receptive field minus one, or 0."""
        cfg = self.config
        if cfg.get("loss_from_start", False):
            return 0
        return (cfg["first_kernel"] + (cfg["kernel"] - 1) * cfg["stacks"]
                * (2 ** cfg["layers"] - 1))

    def forward(self, q):
        """Integer codes ``(N, T)`` -> logits ``(N, T, V)``."""
        q = torch.as_tensor(np.asarray(q) if not torch.is_tensor(q) else q).long()
        onehot = F.one_hot(q, self.levels).to(self.input_conv.weight.dtype)
        k0 = self.input_conv.kernel_size[0]
        delayed = F.pad(onehot.permute(0, 2, 1), (k0, 0))[:, :, :-1]
        h = self.input_conv(delayed)
        skip_sum = 0
        for block in self.blocks:
            h, s = block(h)
            skip_sum = skip_sum + s
        z = self.head2(torch.relu(self.head1(torch.relu(skip_sum))))
        return z.permute(0, 2, 1)

    def loss(self, q):
        """Mean NLL per sample (nats) over positions ``t >= loss_start()``."""
        start = self.loss_start()
        logits = self.forward(q)[:, start:]
        q = torch.as_tensor(np.asarray(q) if not torch.is_tensor(q) else q).long()
        return F.cross_entropy(logits.reshape(-1, self.levels),
                               q[:, start:].reshape(-1))


MODULES = {cls.kind: cls for cls in (TorchGatedPixelCNN, TorchPlainPixelCNN,
                                     TorchWaveNet)}
