"""Weight exchange with other frameworks, and comparison with their outputs.

Four things live here; ``docs/interop.md`` is the user's guide.

1. **Names.** npar names a parameter by layer and role (``l0.v.w``); a
   PyTorch module names it by its place in the module tree
   (``layers.0.v_conv.weight``). :func:`name_table` lists the pairs for a
   model, :func:`to_state_dict` and :func:`from_state_dict` convert, and
   :func:`save_state_dict` / :func:`load_state_dict` read and write them as
   a PyTorch ``.pt`` file (when torch is installed) or an ``.npz`` of the
   same names (for JAX, Julia or anything else). The PyTorch modules with
   exactly these names are in :mod:`npar.verify.torch_modules`.

2. **Masks.** A foreign state_dict may carry its masks (``*.mask``);
   :func:`mask_findings` compares them tap by tap with npar's causal masks.

3. **Julia.** NNlib, Flux and Lux store a 2-D kernel as
   ``(K_w, K_h, C_in, C_out)`` and by default compute a true convolution,
   which reverses the kernel. :func:`to_julia_kernel` and
   :func:`from_julia_kernel` do both changes; :func:`julia_conv_reference`
   is a NumPy emulation of the Julia layer to check them against.

4. **Comparison.** :func:`compare_with_reference` holds npar's logits and
   gradients against another framework's (a ``REFERENCE.npz``) and judges
   whether the reference is causal; :func:`format_report` prints the
   result. This is what ``npar verify`` runs.

torch is optional: only the functions that read or write ``.pt`` files or
run a PyTorch module import it, and say so when it is missing.
"""

import json
import logging
import os
from collections import namedtuple

import numpy as np

from npar.models.io import atomic_write_npz, model_class

logger = logging.getLogger(__name__)

IMAGE_KINDS = ("gated_pixelcnn", "pixelcnn")
KINDS = IMAGE_KINDS + ("wavenet",)
TORCH_SUFFIXES = (".pt", ".pth")

NameRow = namedtuple("NameRow", "npar foreign npar_shape foreign_shape")
NameRow.__doc__ = """One parameter under both names, with both shapes."""


def _import_torch(purpose):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs PyTorch, which is not installed: pip install "
            "'npar[torch]', or use an .npz file instead of .pt"
        ) from error
    return torch


# ---- names ----------------------------------------------------------------


# Each generator yields (npar layer, PyTorch module, as_conv): as_conv marks
# npar's dense output head, whose (C_out, C_in) weights are 1x1 convolutions
# (C_out, C_in, 1, 1) in PyTorch (C_out, C_in, 1 for WaveNet, already so).


def _gated_layer_pairs(config):
    for index in range(config["layers"]):
        for npar_part, torch_part in (("v", "v_conv"), ("h", "h_conv"),
                                      ("vh", "v_to_h"), ("ho", "h_out"),
                                      ("vy", "v_class"), ("hy", "h_class")):
            yield f"l{index}.{npar_part}", f"layers.{index}.{torch_part}", False
    yield "head1", "head1", True
    yield "head2", "head2", True
    if config.get("embedding"):
        yield "embed", "embed", False


def _plain_layer_pairs(config):
    yield "l0", "conv_in", False
    for index in range(1, config["layers"] + 1):
        yield f"l{index}.a", f"blocks.{index - 1}.conv_a", False
        yield f"l{index}.b", f"blocks.{index - 1}.conv_b", False
    yield "head1", "head1", True
    yield "head2", "head2", True
    if config.get("embedding"):
        yield "embed", "embed", False


def _wavenet_layer_pairs(config):
    yield "input", "input_conv", False
    for index in range(config["layers"] * config["stacks"]):
        for npar_part, torch_part in (("dilated", "dilated_conv"),
                                      ("residual", "residual_conv"),
                                      ("skip", "skip_conv")):
            yield f"block{index}.{npar_part}", f"blocks.{index}.{torch_part}", False
    yield "head1", "head1", False
    yield "head2", "head2", False


_LAYER_PAIRS = {"gated_pixelcnn": _gated_layer_pairs, "pixelcnn": _plain_layer_pairs,
                "wavenet": _wavenet_layer_pairs}


def _check_kind(kind):
    if kind not in _LAYER_PAIRS:
        raise ValueError(
            f"no weight mapping for model kind {kind!r}; supported kinds: "
            f"{sorted(_LAYER_PAIRS)}"
        )
    return kind


def name_table(model):
    """Every parameter of ``model`` under its npar and its PyTorch name.

    Returns:
        list of :class:`NameRow` ``(npar, foreign, npar_shape, foreign_shape)``
        in the order of the model's layers. The shapes differ only for the
        PixelCNNs' dense output head, whose ``(C_out, C_in)`` weights are
        ``(C_out, C_in, 1, 1)`` 1x1 convolutions in PyTorch.
    """
    kind = _check_kind(model.kind)
    rows = []
    for npar_layer, foreign_layer, as_conv in _LAYER_PAIRS[kind](model.config):
        for npar_role, foreign_role in (("w", "weight"), ("b", "bias")):
            name = f"{npar_layer}.{npar_role}"
            if name not in model.params:
                continue
            shape = tuple(model.params[name].shape)
            foreign_shape = shape
            if npar_role == "w" and as_conv:
                foreign_shape = shape + (1,) * (4 - len(shape))
            rows.append(NameRow(name, f"{foreign_layer}.{foreign_role}", shape,
                                foreign_shape))
    covered = {row.npar for row in rows}
    if covered != set(model.params):
        raise ValueError(
            f"the name table of {kind} misses parameters "
            f"{sorted(set(model.params) - covered)}"
        )
    return rows


def layer_masks(model):
    """npar's mask of each masked weight: ``{npar weight name: mask}``, each
    mask shaped like the weight (layers without a mask are left out)."""
    return {layer.w_name: np.asarray(layer.mask) for layer in model.layers
            if getattr(layer, "mask", None) is not None}


def to_state_dict(model):
    """npar parameters -> ``{PyTorch name: array}`` (copies, PyTorch shapes)."""
    return {row.foreign: np.array(model.params[row.npar]).reshape(row.foreign_shape)
            for row in name_table(model)}


def _normalise_state_dict(state_dict):
    # numpy arrays; drop the "module." prefix that DataParallel adds.
    out = {}
    for name, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        name = name[len("module."):] if name.startswith("module.") else name
        out[name] = np.asarray(value)
    return out


def detect_kind(state_dict):
    """The model kind whose names a foreign ``state_dict`` uses."""
    if "layers.0.v_conv.weight" in state_dict:
        return "gated_pixelcnn"
    if "conv_in.weight" in state_dict:
        return "pixelcnn"
    if "input_conv.weight" in state_dict:
        return "wavenet"
    sample = sorted(state_dict)[:6]
    raise ValueError(
        "cannot tell the model kind of this state_dict (it has none of "
        "'layers.0.v_conv.weight', 'conv_in.weight', 'input_conv.weight'; "
        f"first names: {sample}); "
        "pass kind= (--kind) and see docs/interop.md for the expected names"
    )


def _count_indexed(state_dict, prefix, suffix):
    indices = set()
    for name in state_dict:
        if name.startswith(prefix) and name.endswith(suffix):
            middle = name[len(prefix):-len(suffix)]
            if middle.isdigit():
                indices.add(int(middle))
    if indices != set(range(len(indices))):
        raise ValueError(
            f"{prefix}<i>{suffix} indices are not 0..n-1: {sorted(indices)}"
        )
    return len(indices)


def _shape(state_dict, name):
    if name not in state_dict:
        raise ValueError(f"the state_dict has no {name!r}, which this kind needs")
    return state_dict[name].shape


def infer_config(kind, state_dict, given=None):
    """The npar config of a foreign ``state_dict``, read from its shapes.

    Args:
        kind: the model kind.
        state_dict: ``{PyTorch name: array}``.
        given: config entries that override what the shapes say; needed for
            what shapes do not show: WaveNet's ``stacks`` (its blocks are
            read as one stack of ``layers`` unless ``stacks`` is given, then
            ``layers = blocks / stacks``) and ``loss_from_start``.
    """
    _check_kind(kind)
    given = dict(given or {})
    head1 = _shape(state_dict, "head1.weight")
    head2 = _shape(state_dict, "head2.weight")
    if kind == "wavenet":
        first = _shape(state_dict, "input_conv.weight")
        blocks = _count_indexed(state_dict, "blocks.", ".dilated_conv.weight")
        stacks = int(given.get("stacks", 1))
        if blocks % stacks:
            raise ValueError(f"{blocks} blocks do not split into {stacks} stacks")
        config = dict(levels=int(first[1]), channels=int(first[0]),
                      skip_channels=int(_shape(state_dict,
                                               "blocks.0.skip_conv.weight")[0]),
                      head_channels=int(head1[0]), layers=blocks // stacks,
                      stacks=stacks,
                      kernel=int(_shape(state_dict,
                                        "blocks.0.dilated_conv.weight")[2]),
                      first_kernel=int(first[2]), loss_from_start=False)
        config.update(given)
        return {**model_class(kind).default_config(), **config}
    if kind == "gated_pixelcnn":
        layers = _count_indexed(state_dict, "layers.", ".v_conv.weight")
        first = _shape(state_dict, "layers.0.v_conv.weight")
        later = (_shape(state_dict, "layers.1.v_conv.weight") if layers > 1
                 else first)
        config = dict(image_channels=int(first[1]), channels=int(first[0]) // 2,
                      layers=layers, kernel=int(later[3]),
                      first_kernel=int(first[3]))
        if "layers.0.v_class.weight" in state_dict:
            config["classes"] = int(state_dict["layers.0.v_class.weight"].shape[1])
    else:
        first = _shape(state_dict, "conv_in.weight")
        layers = _count_indexed(state_dict, "blocks.", ".conv_a.weight")
        later = (_shape(state_dict, "blocks.0.conv_a.weight") if layers else
                 (0, 0, 3, 3))
        config = dict(image_channels=int(first[1]), channels=int(first[0]),
                      layers=layers, kernel=int(later[3]),
                      first_kernel=int(first[3]))
    if "embed.weight" in state_dict:  # (C, V, D): the first layer reads C (1 + D)
        table = state_dict["embed.weight"].shape
        if len(table) != 3:
            raise ValueError(
                f"embed.weight must have shape (C, V, D) (colours, levels, "
                f"embedding size), got {tuple(table)}")
        config["image_channels"] = int(table[0])
        config["embedding"] = int(table[2])
    config["head_channels"] = int(head1[0])
    config["levels"] = int(head2[0]) // config["image_channels"]
    config.update(given)
    return {**model_class(kind).default_config(), **config}


def mask_findings(model, state_dict):
    """Compare the masks a foreign ``state_dict`` carries with npar's.

    Args:
        model: the npar model (its config gives npar's masks).
        state_dict: ``{PyTorch name: array}``; entries ``<module>.mask``
            shaped like ``<module>.weight`` are compared, others ignored.

    Returns:
        list of dicts, one per mask that differs: ``layer`` (npar weight
        name), ``foreign`` (mask name), ``admitted`` (taps the foreign mask
        lets through and npar's causal mask forbids: these read the
        future), ``hidden`` (taps npar uses and the foreign mask drops),
        each a list of index tuples ``(o, c, p, q)``.
    """
    state_dict = _normalise_state_dict(state_dict)
    masks = layer_masks(model)
    findings = []
    for row in name_table(model):
        foreign_mask = row.foreign.rsplit(".", 1)[0] + ".mask"
        if not row.npar.endswith(".w") or foreign_mask not in state_dict:
            continue
        theirs = np.asarray(state_dict[foreign_mask], dtype=np.float64)
        if theirs.size != int(np.prod(row.npar_shape)):
            raise ValueError(
                f"{foreign_mask} has shape {theirs.shape}, expected "
                f"{row.foreign_shape}"
            )
        theirs = theirs.reshape(row.npar_shape) != 0
        ours = masks.get(row.npar, np.ones(row.npar_shape)) != 0
        admitted = np.argwhere(theirs & ~ours)
        hidden = np.argwhere(~theirs & ours)
        if len(admitted) or len(hidden):
            findings.append(dict(
                layer=row.npar, foreign=foreign_mask,
                admitted=[tuple(int(i) for i in t) for t in admitted],
                hidden=[tuple(int(i) for i in t) for t in hidden]))
    return findings


def from_state_dict(state_dict, kind=None, config=None, check_masks=True,
                    zero_masked=True):
    """Build an npar model from a foreign (PyTorch-named) ``state_dict``.

    Args:
        state_dict: ``{name: array or torch tensor}`` with the names of
            :mod:`npar.verify.torch_modules` (a ``module.`` prefix is
            dropped); optional ``<module>.mask`` entries are checked against
            npar's masks.
        kind: ``"gated_pixelcnn"``, ``"pixelcnn"`` or ``"wavenet"``;
            default: detected from the names.
        config: npar config entries; the rest is read from the shapes
            (:func:`infer_config`).
        check_masks: raise if a carried mask differs from npar's.
        zero_masked: set the weights at npar's masked taps to zero. npar's
            forward pass ignores them either way; zeros keep every reader of
            the raw weights (export, cached sampling) causal.

    Returns:
        the model, with the state_dict's dtype (float32 or float64).
    """
    state_dict = _normalise_state_dict(state_dict)
    kind = detect_kind(state_dict) if kind is None else _check_kind(kind)
    cls = model_class(kind)
    config = infer_config(kind, state_dict, config)
    skeleton = cls(config)
    rows = name_table(skeleton)

    expected = {row.foreign for row in rows}
    present = {name for name in state_dict if not name.endswith(".mask")}
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing or extra:
        raise ValueError(
            f"state_dict does not match a {kind} with config {config}: missing "
            f"{missing}, unexpected {extra} (names: see docs/interop.md)"
        )
    dtypes = {state_dict[row.foreign].dtype for row in rows}
    if len(dtypes) != 1 or next(iter(dtypes)).type not in (np.float32, np.float64):
        raise TypeError(
            f"state_dict weights must all be float32 or all float64, got "
            f"{sorted(str(d) for d in dtypes)}"
        )
    if check_masks:
        findings = mask_findings(skeleton, state_dict)
        if findings:
            first = findings[0]
            raise ValueError(
                f"{len(findings)} mask(s) in the state_dict differ from npar's "
                f"causal masks; first: {first['foreign']} admits taps "
                f"{first['admitted'][:4]} that npar forbids and hides "
                f"{first['hidden'][:4]} that npar uses (check_masks=False to "
                "load anyway)"
            )

    params = {}
    for row in rows:
        value = state_dict[row.foreign]
        if value.shape != row.foreign_shape:
            raise ValueError(
                f"{row.foreign} has shape {value.shape}; a {kind} with config "
                f"{config} needs {row.foreign_shape} (npar {row.npar})"
            )
        params[row.npar] = np.array(value).reshape(row.npar_shape)
    if zero_masked:
        for name, mask in layer_masks(skeleton).items():
            live = np.count_nonzero(params[name] * (mask == 0))
            if live:
                logger.info("%s: zeroed %d nonzero weights at masked taps", name,
                            live)
            params[name] *= mask.astype(params[name].dtype)
    return cls(config, params=params)


def save_state_dict(model, path):
    """Write ``model``'s parameters under PyTorch names: a ``.pt`` file via
    ``torch.save`` (needs torch) or an ``.npz`` file (any other suffix)."""
    path = os.fspath(path)
    state_dict = to_state_dict(model)
    if path.endswith(TORCH_SUFFIXES):
        torch = _import_torch("writing a .pt state_dict")
        torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    else:
        atomic_write_npz(path, state_dict)
    return path


def load_state_dict(path):
    """A foreign state_dict as ``{name: numpy array}``, from a ``.pt``/
    ``.pth`` file (needs torch; loaded with ``weights_only=True``; a
    checkpoint dict holding ``"state_dict"`` or ``"model"`` is unwrapped)
    or from an ``.npz`` of the same names."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such state_dict file: {path}")
    if path.endswith(TORCH_SUFFIXES):
        torch = _import_torch("reading a .pt state_dict")
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state_dict.get(key), dict):
                state_dict = state_dict[key]
    else:
        try:
            with np.load(path, allow_pickle=False) as data:
                state_dict = {name: data[name] for name in data.files}
        except Exception as error:  # zipfile.BadZipFile, ValueError, OSError
            raise ValueError(f"{path} is not a readable .npz file: {error}") from error
    return _normalise_state_dict(state_dict)


def import_weights(path, kind=None, config=None, **options):
    """:func:`load_state_dict` then :func:`from_state_dict`."""
    return from_state_dict(load_state_dict(path), kind=kind, config=config,
                           **options)


def torch_module(model, dtype=None):
    """The :mod:`npar.verify.torch_modules` module of ``model``'s kind and
    config, loaded with ``model``'s weights (needs torch)."""
    torch = _import_torch("building a PyTorch module")
    from npar.verify.torch_modules import MODULES

    dtype = model.dtype if dtype is None else np.dtype(dtype)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    module = MODULES[_check_kind(model.kind)](model.config, dtype=torch_dtype)
    state_dict = {k: torch.from_numpy(v.astype(dtype))
                  for k, v in to_state_dict(model).items()}
    module.load_state_dict(state_dict, strict=True)
    return module


# ---- Julia ------------------------------------------------------------------


def to_julia_kernel(w, flipped=True):
    """npar/PyTorch kernel ``(C_out, C_in, K_h, K_w)`` -> Julia's
    ``(K_w, K_h, C_in, C_out)`` (1-D: ``(C_out, C_in, K)`` -> ``(K, C_in,
    C_out)``).

    The returned array ``u`` has ``u[q, p, c, o] = w[o, c, p', q']`` with
    ``(p', q') = (K_h-1-p, K_w-1-q)`` when ``flipped`` and ``(p, q)`` when
    not. Written to ``.npz`` and read with NPZ.jl it is the Julia array of
    size ``(K_w, K_h, C_in, C_out)`` that Flux and Lux layers hold.

    Args:
        w: ``(C_out, C_in, K_h, K_w)`` or ``(C_out, C_in, K)``.
        flipped: True (default) reverses the spatial axes, for a Julia
            layer that computes a true convolution: Flux ``Conv``, Lux
            ``Conv`` (``cross_correlation=false``, its default) and NNlib's
            ``conv`` with its keyword ``flipped=false`` (NNlib's keyword
            means "the kernel is already flipped", the opposite sense).
            False for a cross-correlating layer: Flux ``CrossCor``, Lux
            ``Conv(...; cross_correlation=true)``, NNlib ``flipped=true``.

    Returns:
        ``(K_w, K_h, C_in, C_out)`` (or ``(K, C_in, C_out)``), same dtype.
    """
    w = np.asarray(w)
    if w.ndim not in (3, 4):
        raise ValueError(
            f"w must be (C_out, C_in, K_h, K_w) or (C_out, C_in, K), got shape "
            f"{w.shape}"
        )
    if flipped:
        w = np.flip(w, axis=tuple(range(2, w.ndim)))
    return np.ascontiguousarray(w.transpose(tuple(reversed(range(w.ndim)))))


def from_julia_kernel(u, flipped=True):
    """Inverse of :func:`to_julia_kernel`: ``(K_w, K_h, C_in, C_out)`` ->
    ``(C_out, C_in, K_h, K_w)`` (or ``(K, C_in, C_out)`` -> ``(C_out, C_in,
    K)``); ``flipped`` as there."""
    u = np.asarray(u)
    if u.ndim not in (3, 4):
        raise ValueError(
            f"u must be (K_w, K_h, C_in, C_out) or (K, C_in, C_out), got shape "
            f"{u.shape}"
        )
    w = u.transpose(tuple(reversed(range(u.ndim))))
    if flipped:
        w = np.flip(w, axis=tuple(range(2, w.ndim)))
    return np.ascontiguousarray(w)


def to_julia_image(x):
    """``(N, C, H, W)`` -> Julia's WHCN ``(W, H, C, N)``."""
    return np.ascontiguousarray(np.asarray(x).transpose(3, 2, 1, 0))


def from_julia_image(x_julia):
    """WHCN ``(W, H, C, N)`` -> ``(N, C, H, W)``."""
    return np.ascontiguousarray(np.asarray(x_julia).transpose(3, 2, 1, 0))


def julia_padding(padding):
    """npar's ``(P_t, P_b, P_l, P_r)`` -> Flux/Lux ``pad`` on WHCN arrays,
    ``(P_l, P_r, P_t, P_b)`` (first spatial axis, the width, first)."""
    top, bottom, left, right = padding
    return (left, right, top, bottom)


def julia_conv_reference(x, u, pad=(0, 0, 0, 0), dilation=(1, 1),
                         cross_correlation=False):
    """NumPy emulation of a Julia 2-D convolution layer without bias.

    NNlib computes a true convolution by reversing the kernel along its
    spatial axes and then cross-correlating; with
    ``cross_correlation=True`` the reversal is skipped. With the reversed
    (or not) kernel ``u~`` and ``x~`` zero-padded by ``pad``:

    .. math::  y_{a b o n} = \\sum_{q, p, c} \\tilde u_{q p c o}\\,
               \\tilde x_{a + D_w q,\\, b + D_h p,\\, c,\\, n}

    Args:
        x: ``(W, H, C_in, N)`` (WHCN).
        u: ``(K_w, K_h, C_in, C_out)``.
        pad: ``(P_l, P_r, P_t, P_b)``, the Flux order (width first).
        dilation: ``(D_w, D_h)``.
        cross_correlation: False (Julia's default) reverses the kernel.

    Returns:
        y: ``(W_out, H_out, C_out, N)``.
    """
    x, u = np.asarray(x), np.asarray(u)
    if not cross_correlation:
        u = u[::-1, ::-1]
    left, right, top, bottom = pad
    d_w, d_h = dilation
    x_pad = np.pad(x, ((left, right), (top, bottom), (0, 0), (0, 0)))
    k_w, k_h = u.shape[:2]
    w_out = x_pad.shape[0] - d_w * (k_w - 1)
    h_out = x_pad.shape[1] - d_h * (k_h - 1)

    y = np.zeros((w_out, h_out, u.shape[3], x.shape[3]), np.result_type(x, u))
    for q in range(k_w):
        for p in range(k_h):
            window = x_pad[d_w * q:d_w * q + w_out, d_h * p:d_h * p + h_out]
            y += np.einsum("co,abcn->abon", u[q, p], window)
    return y


def to_julia(model, flipped=True):
    """``model``'s parameters for a Julia model: PyTorch names, every
    kernel through :func:`to_julia_kernel`, biases unchanged."""
    return {name: to_julia_kernel(value, flipped)
            if value.ndim >= 3 and name != "embed.weight" else value
            for name, value in to_state_dict(model).items()}


# ---- comparison with a reference ---------------------------------------------


def _check_ints(name, x):
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer levels, got dtype {x.dtype}")
    return x


def position_axes(kind):
    """Names of the axes of one input position: ``("c", "i", "j")`` for
    images ``(N, C, H, W)``, ``("t",)`` for audio codes ``(N, T)``."""
    return ("t",) if _check_kind(kind) == "wavenet" else ("c", "i", "j")


def order_keys(kind, shape):
    """Autoregressive order of every input position.

    Args:
        kind: the model kind.
        shape: the input's shape without the batch axis, ``(C, H, W)`` or
            ``(T,)``.

    Returns:
        int64 array of ``shape``: sub-pixel ``(c, i, j)`` has key
        ``(i W + j) C + c``, sample ``t`` has key ``t``. The logit at a
        position with key ``k`` may read exactly the inputs with a key
        smaller than ``k``.
    """
    if position_axes(kind) == ("t",):
        return np.arange(shape[0], dtype=np.int64)
    channels, height, width = shape
    c, i, j = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width),
                          indexing="ij")
    return ((i * width + j) * channels + c).astype(np.int64)


def _describe(axes, index):
    return "(" + ", ".join(f"{k}={int(v)}" for k, v in zip(axes, index)) + ")"


def compare_arrays(ours, theirs):
    """Largest absolute difference, and the same relative to the largest
    reference magnitude, with the index where it occurs.

    Returns:
        dict with ``shape``, ``max_abs``, ``max_rel`` (``max_abs`` over
        ``max |theirs|``), ``where`` (index tuple of ``max_abs``).
    """
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: npar {ours.shape}, reference {theirs.shape}")
    if not np.all(np.isfinite(theirs)):
        bad = np.argwhere(~np.isfinite(theirs))[0]
        raise ValueError(f"the reference holds a non-finite value at {tuple(bad)}")
    diff = np.abs(ours - theirs)
    if not diff.size:
        return dict(shape=theirs.shape, max_abs=0.0, max_rel=0.0, where=())
    flat = int(np.argmax(diff))
    scale = float(np.max(np.abs(theirs)))
    max_abs = float(diff.reshape(-1)[flat])
    return dict(shape=tuple(theirs.shape), max_abs=max_abs,
                max_rel=max_abs / max(scale, np.finfo(np.float64).tiny),
                where=tuple(int(i) for i in np.unravel_index(flat, theirs.shape)))


def default_rtol(dtype):
    """Tolerance on :func:`compare_arrays`' ``max_rel``: 1e-4 for float32
    data, 1e-9 for float64."""
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-9


def default_causal_rtol(dtype):
    """Threshold of the causality probes: 1e-5 for float32 data, 1e-11 for
    float64. The reference computes a probe and its base input with the
    same code, so a logit that does not read the changed input moves only
    by the rounding of algorithms that mix neighbouring pixels (Winograd,
    FFT): ~1e-7 relative in float32. A leak moves it by far more."""
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-11


def _grad_names(model):
    # Accept npar names and PyTorch names in "grad.<name>".
    table = {row.npar: row for row in name_table(model)}
    table.update({row.foreign: row for row in table.copy().values()})
    return table


def _position_summary(kind, ours, theirs, tol_abs):
    # Logits (N, *P, V): the positions P whose V logits differ by > tol_abs.
    per_position = np.abs(np.asarray(ours, np.float64) - theirs).max(axis=-1)
    bad = np.argwhere(per_position > tol_abs)
    summary = dict(axes=("n",) + position_axes(kind), n_differing=int(len(bad)),
                   n_positions=int(per_position.size))
    if not len(bad):
        return summary
    keys = order_keys(kind, per_position.shape[1:])[tuple(bad[:, 1:].T)]
    first = bad[np.lexsort((keys, bad[:, 0]))[0]]
    summary["first"] = tuple(int(v) for v in first)
    summary["ranges"] = {axis: (int(bad[:, k].min()), int(bad[:, k].max()))
                         for k, axis in enumerate(summary["axes"]) if k > 0}
    return summary


def _causal_check(kind, x, logits, probes, probe_logits, base, rtol):
    # A logit whose key is <= the smallest key of a changed input must stay.
    keys = order_keys(kind, x.shape[1:])
    violations = []
    n_unchanged = 0
    scale = float(np.max(np.abs(probe_logits))) if probe_logits.size else 0.0
    tol_abs = rtol * max(scale, 1.0)
    for m in range(len(probes)):
        b = int(base[m])
        changed = probes[m] != x[b]
        if not changed.any():
            n_unchanged += 1
            continue
        first_key = int(keys[changed].min())
        source = np.argwhere(changed & (keys == first_key))[0]
        moved = np.abs(probe_logits[m].astype(np.float64) - logits[b]).max(axis=-1)
        for target in np.argwhere((keys <= first_key) & (moved > tol_abs)):
            violations.append(dict(
                probe=m, base=b, changed=tuple(int(v) for v in source),
                n_changed=int(changed.sum()),
                logit=tuple(int(v) for v in target),
                size=float(moved[tuple(target)])))
    violations.sort(key=lambda v: -v["size"])
    return dict(judged=True, causal=not violations, n_probes=int(len(probes)),
                n_unchanged_probes=n_unchanged, tol_abs=tol_abs,
                n_violations=len(violations), violations=violations[:20],
                n_probes_violating=len({v["probe"] for v in violations}))


def _check_inputs(model, x):
    if model.kind == "wavenet":
        model._check_codes(x)
    else:
        from npar.models.pixelcnn import check_images

        check_images(x, model.image_channels, model.levels)
    return x


def compare_with_reference(model, reference, rtol=None, causal_rtol=None):
    """Hold ``model`` against another framework's inputs and outputs.

    Args:
        model: an npar model (its dtype is changed to the reference's).
        reference: dict of arrays (the contents of ``REFERENCE.npz``), with
            ``P`` the positions of one input, ``(C, H, W)`` for images and
            ``(T,)`` for WaveNet's codes:

            - ``x`` ``(N, *P)`` integer inputs (image levels or mu-law
              codes);
            - ``labels`` ``(N,)`` integer classes, for a class-conditional
              Gated PixelCNN only;
            - ``logits`` ``(N, *P, V)`` the reference's logits of ``x``;
            - ``loss`` (optional) its mean NLL in nats (per sub-pixel; for
              WaveNet over the positions the model's loss scores);
            - ``grad.<name>`` (optional) its gradient of that mean NLL with
              respect to a parameter, under npar's or PyTorch's name and in
              either shape;
            - ``causal.x`` ``(M, *P)`` (optional) perturbed copies of inputs
              of ``x``, ``causal.logits`` ``(M, *P, V)`` the reference's
              logits of them and ``causal.base`` ``(M,)`` the index in ``x``
              of the input each was made from (default 0).
        rtol: tolerance on each tensor's ``max_rel``; default
            :func:`default_rtol` of the reference's logits dtype.
        causal_rtol: a probe's logit counts as moved when it moves by more
            than ``causal_rtol * max(1, max |causal.logits|)``; default
            :func:`default_causal_rtol`.

    Returns:
        a report dict: ``tensors`` (one entry per compared tensor, with
        :func:`compare_arrays`' fields, ``ok`` and ``foreign`` name),
        ``positions`` (where the logits differ), ``masked_taps`` (masked
        taps on which the reference's gradient is nonzero), ``causal`` (the
        probe verdict), ``suspects`` (parameters to look at first) and
        ``ok``.
    """
    kind = _check_kind(model.kind)
    for key in ("x", "logits"):
        if key not in reference:
            raise ValueError(
                f"the reference has no {key!r} array (keys: {sorted(reference)}); "
                "see docs/interop.md for the format"
            )
    x = _check_inputs(model, _check_ints("x", np.asarray(reference["x"])))
    their_logits = np.asarray(reference["logits"])
    dtype = their_logits.dtype if their_logits.dtype in (np.float32, np.float64) \
        else np.dtype(np.float64)
    if model.dtype != dtype:
        model = model.astype(dtype)
    rtol = default_rtol(dtype) if rtol is None else float(rtol)
    if causal_rtol is None:
        causal_rtol = default_causal_rtol(dtype)
    labels = reference.get("labels")
    if labels is not None:
        labels = _check_ints("labels", np.asarray(labels))

    def with_labels(selected=None):
        if labels is None:
            return {}
        return {"labels": labels if selected is None else labels[selected]}

    tensors = []

    def add(name, ours, theirs, foreign=None):
        entry = compare_arrays(ours, theirs)
        entry.update(name=name, foreign=foreign, ok=entry["max_rel"] <= rtol)
        tensors.append(entry)
        return entry

    our_logits = model.logits(x, **with_labels())
    add("logits", our_logits, their_logits)
    positions = _position_summary(
        kind, our_logits, their_logits,
        rtol * max(float(np.max(np.abs(their_logits))), np.finfo(float).tiny))

    grad_keys = sorted(k for k in reference if k.startswith("grad."))
    masked_taps = []
    if "loss" in reference or grad_keys:
        loss, grads = model.loss_and_grads(x, **with_labels())
        if "loss" in reference:
            add("loss", np.float64(loss), np.asarray(reference["loss"], np.float64))
        names = _grad_names(model)
        masks = layer_masks(model)
        for key in grad_keys:
            name = key[len("grad."):]
            if name not in names:
                raise ValueError(
                    f"{key}: {name!r} is neither an npar nor a PyTorch parameter "
                    f"name of this {kind}; known: {sorted(names)[:8]} ..."
                )
            row = names[name]
            theirs = np.asarray(reference[key])
            if theirs.size != int(np.prod(row.npar_shape)):
                raise ValueError(f"{key} has shape {theirs.shape}, expected "
                                 f"{row.foreign_shape} or {row.npar_shape}")
            theirs = theirs.reshape(row.npar_shape)
            add(f"grad.{row.npar}", grads[row.npar], theirs, row.foreign)
            if row.npar in masks:
                live = np.argwhere((masks[row.npar] == 0) & (theirs != 0))
                if len(live):
                    sizes = np.abs(theirs[tuple(live.T)])
                    top = np.argsort(-sizes)[:8]
                    masked_taps.append(dict(
                        param=row.npar, foreign=row.foreign, n_live=int(len(live)),
                        taps=[tuple(int(v) for v in live[k]) for k in top],
                        sizes=[float(sizes[k]) for k in top]))

    causal = dict(judged=False, causal=None, axes=position_axes(kind))
    if "causal.x" in reference or "causal.logits" in reference:
        if "causal.x" not in reference or "causal.logits" not in reference:
            raise ValueError("causal probes need both 'causal.x' and 'causal.logits'")
        probes = _check_inputs(
            model, _check_ints("causal.x", np.asarray(reference["causal.x"])))
        probe_logits = np.asarray(reference["causal.logits"])
        base = np.asarray(reference.get("causal.base", np.zeros(len(probes), int)))
        if probes.shape[1:] != x.shape[1:] or probe_logits.shape[1:] != \
                their_logits.shape[1:] or base.shape != (len(probes),):
            raise ValueError(
                f"causal.x {probes.shape}, causal.logits {probe_logits.shape} and "
                f"causal.base {base.shape} do not fit x {x.shape} and logits "
                f"{their_logits.shape}"
            )
        if base.size and (base.min() < 0 or base.max() >= len(x)):
            raise ValueError(f"causal.base must index x (0..{len(x) - 1}), got "
                             f"{base.min()}..{base.max()}")
        add("causal.logits", model.logits(probes, **with_labels(base)),
            probe_logits)
        causal.update(_causal_check(kind, x, their_logits, probes, probe_logits,
                                    base, causal_rtol))
    if masked_taps:
        causal["causal"] = False
        causal["masked_taps_live"] = True

    suspects = [entry["param"] for entry in masked_taps]
    grads_bad = sorted((e for e in tensors if e["name"].startswith("grad.")
                        and not e["ok"]), key=lambda e: -e["max_rel"])
    suspects += [e["name"][len("grad."):] for e in grads_bad
                 if e["name"][len("grad."):] not in suspects]
    ok = all(e["ok"] for e in tensors) and causal["causal"] is not False
    return dict(kind=kind, dtype=str(np.dtype(dtype)), rtol=rtol, tensors=tensors,
                positions=positions, masked_taps=masked_taps, causal=causal,
                suspects=suspects, ok=ok)


def format_report(report, title="npar verify"):
    """The report of :func:`compare_with_reference` as text lines."""
    lines = [f"{title}: {report['kind']} in {report['dtype']}, tolerance on "
             f"max rel {report['rtol']:.1e}"]
    width = max([len(e["name"]) for e in report["tensors"]] + [6])
    lines.append(f"{'tensor':<{width}}  {'max abs':>9}  {'max rel':>9}  "
                 "verdict  at (index of max abs)  [PyTorch name]")
    for e in report["tensors"]:
        foreign = f"  [{e['foreign']}]" if e["foreign"] else ""
        lines.append(f"{e['name']:<{width}}  {e['max_abs']:9.2e}  {e['max_rel']:9.2e}"
                     f"  {'ok     ' if e['ok'] else 'DIFFERS'}  {e['where']}{foreign}")
    pos = report["positions"]
    if pos["n_differing"]:
        ranges = ", ".join(f"{axis} {lo}..{hi}" for axis, (lo, hi)
                           in pos["ranges"].items())
        lines.append(
            f"logits differ at {pos['n_differing']} of {pos['n_positions']} "
            f"positions {pos['axes']}; first in autoregressive order "
            f"{_describe(pos['axes'], pos['first'])}; {ranges}")
    for entry in report["masked_taps"]:
        taps = ", ".join(f"{tap} |grad| {size:.1e}"
                         for tap, size in zip(entry["taps"][:3], entry["sizes"][:3]))
        lines.append(
            f"MASKED TAPS LIVE in {entry['param']} [{entry['foreign']}]: the "
            f"reference's gradient is nonzero at {entry['n_live']} tap(s) "
            f"(o, c, p, q) that npar's causal mask forbids: {taps}")
    causal = report["causal"]
    axes = causal["axes"]
    if causal["judged"]:
        lines.append(f"causality probes: {causal['n_probes']} "
                     f"({causal['n_unchanged_probes']} change nothing), "
                     f"threshold {causal['tol_abs']:.1e}")
        if causal["n_violations"]:
            v = causal["violations"][0]
            offset = ", ".join(f"{axis} {b - a:+d}" for axis, a, b
                               in zip(axes, v["changed"], v["logit"]) if axis != "c")
            lines.append(
                f"REFERENCE NOT CAUSAL: {causal['n_violations']} logits in "
                f"{causal['n_probes_violating']} probe(s) move when an input at "
                f"the same or a later position changes; largest: probe "
                f"{v['probe']} changes x[{v['base']}] at "
                f"{_describe(axes, v['changed'])}"
                f"{' and later' if v['n_changed'] > 1 else ''}, the logits at "
                f"{_describe(axes, v['logit'])} move by {v['size']:.2e} "
                f"(offset of the logit from the change: {offset})")
    verdict = {True: "causal", False: "NOT causal", None: "not judged (add "
               "causal.x and causal.logits, or grad.* arrays)"}[causal["causal"]]
    lines.append(f"reference causality: {verdict}")
    if report["suspects"]:
        lines.append("look first at: " + ", ".join(report["suspects"][:6]))
    lines.append("verdict: " + ("AGREES" if report["ok"] else "DIFFERS"))
    return lines


def report_json(report):
    """The report as a JSON string."""
    return json.dumps(report, indent=2, default=lambda o: o.tolist()
                      if hasattr(o, "tolist") else str(o))


# ---- making a reference file ---------------------------------------------------


def causal_probes(x, n_probes=16, levels=256, base=0, seed=0):
    """Copies of input ``x[base]`` with one position changed in each.

    Args:
        x: ``(N, C, H, W)`` integer images or ``(N, T)`` codes.
        n_probes: number of copies; one per position (all ``C H W``
            sub-pixels, all ``T`` samples) when larger.
        levels: V; each changed value moves to another level in ``0..V-1``.
        base: which input of ``x`` to perturb.
        seed: seed of the positions and the new values.

    Returns:
        ``(probes (M, *P), base (M,))`` for ``causal.x`` and ``causal.base``.
    """
    x = _check_ints("x", np.asarray(x))
    rng = np.random.default_rng(seed)
    single = x[base]
    count = single.size
    if n_probes >= count:
        chosen = np.arange(count)
    else:
        chosen = np.sort(rng.choice(count, size=n_probes, replace=False))
    probes = np.repeat(single[None], len(chosen), axis=0)
    flat = probes.reshape(len(chosen), -1)
    rows = np.arange(len(chosen))
    shift = rng.integers(1, levels, size=len(chosen))
    flat[rows, chosen] = (flat[rows, chosen].astype(np.int64) + shift) % levels
    return probes, np.full(len(chosen), base, dtype=np.int64)


def reference_from_torch(module, x, probes=None, base=None, grads=True,
                         labels=None):
    """``REFERENCE.npz`` arrays from a PyTorch module (needs torch).

    ``module(x)`` must return logits ``(N, *P, V)`` for integer inputs
    ``(N, *P)`` and ``module.loss(x)`` the mean NLL, as the modules of
    :mod:`npar.verify.torch_modules` do; the gradients are stored under the
    module's own parameter names, ``grad.<name>``.
    """
    torch = _import_torch("running a PyTorch reference")
    x = _check_ints("x", np.asarray(x))
    extra, arrays = (), {"x": x}
    if labels is not None:
        labels = _check_ints("labels", np.asarray(labels))
        extra, arrays["labels"] = (torch.from_numpy(labels),), labels
    module.zero_grad(set_to_none=True)
    loss = module.loss(torch.from_numpy(x), *extra)
    arrays["loss"] = np.asarray(loss.item())
    if grads:
        loss.backward()
        for name, p in module.named_parameters():
            if p.grad is not None:
                arrays[f"grad.{name}"] = p.grad.detach().numpy().copy()
    with torch.no_grad():
        arrays["logits"] = module(torch.from_numpy(x), *extra).numpy().copy()
        if probes is not None:
            base = np.zeros(len(probes), np.int64) if base is None else base
            arrays["causal.x"] = np.asarray(probes)
            arrays["causal.base"] = np.asarray(base)
            extra = () if labels is None else (torch.from_numpy(labels[base]),)
            arrays["causal.logits"] = module(torch.from_numpy(arrays["causal.x"]),
                                             *extra).numpy().copy()
    return arrays
