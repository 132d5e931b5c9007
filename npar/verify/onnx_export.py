"""Export npar models to ONNX, built node by node with ``onnx.helper``.

The graph computes the same function as the model's forward pass, with
every causal mask multiplied into its weights (``w * m``), so the ONNX file
holds only the weights that are used and reads no future pixel whatever
the runtime does with them. Convolutions are ONNX ``Conv`` nodes with
npar's asymmetric padding written as ``pads = [P_t, P_l, P_b, P_r]`` and
its dilations; the dense output head becomes two 1x1 ``Conv`` nodes.

PixelCNNs: input ``x`` ``(N, C, H, W)`` with symbolic ``N``, ``H``, ``W``,
either ``uint8`` levels ``0..V-1`` (``input_type="uint8"``, the default;
the graph casts them and scales ``x * 2 / (V - 1) - 1`` as npar does) or
float32 values already scaled that way (``input_type="float"``); a
class-conditional Gated PixelCNN has a second input ``labels`` ``(N,)``
int64. Output ``logits`` ``(N, C, H, W, V)`` float32.

WaveNet: input ``x`` ``(N, T)`` mu-law codes, ``uint8`` (default) or
``int64``, turned into one-hot vectors by a ``OneHot`` node; output
``logits`` ``(N, T, V)`` float32 for every position (npar's
``model.logits(q)``).

Requires the optional ``onnx`` extra (and ``onnxruntime`` for
:func:`run_onnx`).
"""

import json
import logging
import os

import numpy as np

from npar.verify.interop import KINDS

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_TYPES = {"gated_pixelcnn": ("uint8", "float"), "pixelcnn": ("uint8", "float"),
               "wavenet": ("uint8", "int64")}


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as error:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'npar[onnx]'"
        ) from error
    return onnx, helper, numpy_helper


class _GraphBuilder:
    """Collects nodes and initializers; every value gets a fresh name."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.count = 0

    def fresh(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem, array):
        name = self.fresh(stem)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, stem=None, n_out=1, **attrs):
        outputs = [self.fresh(stem or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outputs,
                                                name=self.fresh(op_type), **attrs))
        return outputs[0] if n_out == 1 else outputs

    def conv(self, x, layer, params):
        """A :class:`npar.nn.layers.Conv2d` (or a dense layer as 1x1) with its
        mask baked into the weights."""
        w = np.asarray(params[layer.w_name], dtype=np.float64)
        if getattr(layer, "mask", None) is not None:
            w = w * layer.mask
        if w.ndim == 2:  # Dense (C_out, C_in): a 1x1 convolution
            w = w[:, :, None, None]
            pads, dilations = [0, 0, 0, 0], [1, 1]
        elif w.ndim == 3:  # causal 1-D: D (K - 1) zeros on the left only
            dilation = int(layer.dilation)
            pads, dilations = [dilation * (w.shape[2] - 1), 0], [dilation]
        else:
            top, bottom, left, right = layer.padding
            pads, dilations = [top, left, bottom, right], list(layer.dilation)
        inputs = [x, self.const(layer.w_name, w.astype(np.float32))]
        if layer.b_name in params:
            inputs.append(self.const(layer.b_name,
                                     np.asarray(params[layer.b_name], np.float32)))
        return self.op("Conv", inputs, stem=layer.name, kernel_shape=list(w.shape[2:]),
                       pads=pads, dilations=dilations)

    def gate(self, x, channels):
        """``tanh(a) * sigmoid(b)`` of the two channel halves of ``x``."""
        split = self.const("split", np.array([channels, channels], np.int64))
        a, b = self.op("Split", [x, split], n_out=2, axis=1)
        return self.op("Mul", [self.op("Tanh", [a]), self.op("Sigmoid", [b])],
                       stem="gate")

    def shift_down(self, x):
        """``y[:, :, i] = x[:, :, i-1]``, row 0 zero: pad one row on top and
        drop the last."""
        pads = self.const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 0], np.int64))
        padded = self.op("Pad", [x, pads])
        starts = self.const("starts", np.array([0], np.int64))
        ends = self.const("ends", np.array([-1], np.int64))
        axes = self.const("axes", np.array([2], np.int64))
        return self.op("Slice", [padded, starts, ends, axes], stem="shifted")


def _class_bias(g, y, layer, params):
    # One-hot classes y (N, classes) -> the per-class gate bias (N, 2F, 1, 1).
    w_t = np.ascontiguousarray(np.asarray(params[layer.w_name], np.float32).T)
    bias = g.op("MatMul", [y, g.const(layer.w_name, w_t)], stem=layer.name)
    axes = g.const("axes", np.array([2, 3], np.int64))
    return g.op("Unsqueeze", [bias, axes], stem=layer.name)


def _gated_body(g, model, params, x, y=None):
    width = model.config["channels"]
    v = h = x
    for index, (v_conv, h_conv, v_to_h, h_out) in enumerate(model.stack):
        v_pre = g.conv(v, v_conv, params)
        if y is not None:
            v_bias, h_bias = model.class_bias[index]
            v_pre = g.op("Add", [v_pre, _class_bias(g, y, v_bias, params)])
        link = g.conv(g.shift_down(v_pre), v_to_h, params)
        h_pre = g.op("Add", [g.conv(h, h_conv, params), link])
        if y is not None:
            h_pre = g.op("Add", [h_pre, _class_bias(g, y, h_bias, params)])
        v = g.gate(v_pre, width)
        h_res = g.conv(g.gate(h_pre, width), h_out, params)
        h = h_res if index == 0 else g.op("Add", [h, h_res], stem=f"l{index}.h")
    return h


def _plain_body(g, model, params, x, y=None):
    h = g.conv(x, model.first, params)
    for conv_a, conv_b in model.blocks:
        a = g.conv(g.op("Relu", [h]), conv_a, params)
        b = g.conv(g.op("Relu", [a]), conv_b, params)
        h = g.op("Add", [h, b], stem=conv_a.name.split(".")[0])
    return h


def _wavenet_graph(g, onnx, model, input_type):
    # codes (N, T) -> one-hot (N, V, T) -> delayed input conv -> blocks -> head.
    params, levels = model.params, model.levels
    codes = "x"
    if input_type == "uint8":
        codes = g.op("Cast", ["x"], to=onnx.TensorProto.INT64, stem="codes")
    depth = g.const("depth", np.array(levels, np.int64))
    values = g.const("values", np.array([0.0, 1.0], np.float32))
    onehot = g.op("OneHot", [codes, depth, values], axis=1)
    # The input layer reads q[t - K_0 .. t-1]: its K_0 taps cover the one-hot
    # codes padded with K_0 zero steps on the left and with the last dropped.
    k0 = model.config["first_kernel"]
    pads = g.const("pads", np.array([0, 0, k0, 0, 0, 0], np.int64))
    padded = g.op("Pad", [onehot, pads])
    starts = g.const("starts", np.array([0], np.int64))
    ends = g.const("ends", np.array([-1], np.int64))
    axes = g.const("axes", np.array([2], np.int64))
    delayed = g.op("Slice", [padded, starts, ends, axes], stem="delayed")
    w_in = np.asarray(params[model.input.w_name], np.float32)
    b_in = np.asarray(params[model.input.b_name], np.float32)
    h = g.op("Conv", [delayed, g.const("input.w", w_in), g.const("input.b", b_in)],
             stem="input", kernel_shape=[k0], pads=[0, 0], dilations=[1])

    skip_sum = None
    for dilated, residual, skip in model.blocks:
        gated = g.gate(g.conv(h, dilated, params), model.config["channels"])
        s = g.conv(gated, skip, params)
        skip_sum = s if skip_sum is None else g.op("Add", [skip_sum, s], stem="skips")
        if residual is not None:
            h = g.op("Add", [h, g.conv(gated, residual, params)], stem="residual")
    hidden = g.op("Relu", [g.conv(g.op("Relu", [skip_sum]), model.head1, params)])
    z = g.conv(hidden, model.head2, params)  # (N, V, T)
    g.nodes.append(g.helper.make_node("Transpose", [z], ["logits"], perm=[0, 2, 1],
                                      name=g.fresh("Transpose")))
    elem_type = (onnx.TensorProto.UINT8 if input_type == "uint8"
                 else onnx.TensorProto.INT64)
    inputs = [g.helper.make_tensor_value_info("x", elem_type, ["N", "T"])]
    outputs = [g.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                               ["N", "T", levels])]
    return inputs, outputs


def to_onnx(model, input_type="uint8", opset=DEFAULT_OPSET):
    """The ONNX graph of an npar image model.

    Args:
        model: a :class:`~npar.models.pixelcnn.GatedPixelCNN` or
            :class:`~npar.models.pixelcnn.PixelCNN` (weights are written as
            float32 whatever the model's dtype).
        input_type: ``"uint8"`` (levels, scaled in the graph) or ``"float"``
            (float32 already scaled to ``[-1, 1]``).
        opset: ONNX opset version, >= 13.

    Returns:
        ``onnx.ModelProto``, checked by ``onnx.checker`` with shape inference.
    """
    onnx, helper, numpy_helper = _import_onnx()
    if model.kind not in KINDS:
        raise NotImplementedError(f"ONNX export handles {KINDS}, not {model.kind!r}")
    if input_type not in INPUT_TYPES[model.kind]:
        raise ValueError(
            f"input_type of a {model.kind} must be one of "
            f"{INPUT_TYPES[model.kind]}, got {input_type!r}"
        )
    if opset < 13:
        raise ValueError(f"opset must be >= 13 (Split with a split input), got {opset}")
    if opset > onnx.defs.onnx_opset_version():
        raise ValueError(
            f"opset must be <= {onnx.defs.onnx_opset_version()}, the newest the "
            f"installed onnx package knows, got {opset}")
    g = _GraphBuilder(helper, numpy_helper)
    if model.kind == "wavenet":
        inputs, outputs = _wavenet_graph(g, onnx, model, input_type)
        return _finish(onnx, helper, g, model, inputs, outputs, input_type, opset)
    channels, levels = model.image_channels, model.levels

    if input_type == "uint8":
        as_float = g.op("Cast", ["x"], to=onnx.TensorProto.FLOAT)
        scale = g.const("scale", np.array(2.0 / (levels - 1), np.float32))
        one = g.const("one", np.array(1.0, np.float32))
        x = g.op("Sub", [g.op("Mul", [as_float, scale]), one], stem="scaled")
        elem_type = onnx.TensorProto.UINT8
    else:
        x, elem_type = "x", onnx.TensorProto.FLOAT
    if model.embedding:
        x = _level_embedding(g, onnx, model, x, input_type)
    y, classes = None, model.config.get("classes", 0)
    if classes:
        depth = g.const("depth", np.array(classes, np.int64))
        values = g.const("values", np.array([0.0, 1.0], np.float32))
        y = g.op("OneHot", [g.op("Cast", ["labels"], to=onnx.TensorProto.INT64),
                            depth, values], axis=-1, stem="classes")
    body = _gated_body if model.kind == "gated_pixelcnn" else _plain_body
    features = body(g, model, model.params, x, y)

    head1, head2 = model.head
    hidden = g.op("Relu", [g.conv(g.op("Relu", [features]), head1, model.params)])
    z = g.conv(hidden, head2, model.params)  # (N, C V, H, W)
    z = g.op("Transpose", [z], perm=[0, 2, 3, 1])  # (N, H, W, C V)
    shape = g.const("shape", np.array([0, 0, 0, channels, levels], np.int64))
    z = g.op("Reshape", [z, shape])  # (N, H, W, C, V)
    g.nodes.append(helper.make_node("Transpose", [z], ["logits"], perm=[0, 3, 1, 2, 4],
                                    name=g.fresh("Transpose")))

    inputs = [helper.make_tensor_value_info("x", elem_type, ["N", channels, "H", "W"])]
    if classes:
        inputs.append(helper.make_tensor_value_info("labels", onnx.TensorProto.INT64,
                                                    ["N"]))
    outputs = [helper.make_tensor_value_info(
        "logits", onnx.TensorProto.FLOAT, ["N", channels, "H", "W", levels])]
    return _finish(onnx, helper, g, model, inputs, outputs, input_type, opset)


def _level_embedding(g, onnx, model, scaled, input_type):
    # (N, C, H, W) scaled levels -> the first layer's input (N, C (1 + D), H,
    # W): per colour its scaled value, then Gather of its level's table row.
    if input_type != "uint8":
        raise ValueError(
            f"a model with a level embedding (embedding={model.embedding}) reads "
            f"its table by level: export it with input_type='uint8', got "
            f"{input_type!r}")
    codes = g.op("Cast", ["x"], to=onnx.TensorProto.INT64, stem="codes")
    table = model.params[model.embed.w_name].astype(np.float32)  # (C, V, D)
    parts = []
    for c in range(model.image_channels):
        parts.append(g.op("Gather", [scaled, g.const("colour", np.array([c]))],
                          axis=1))  # (N, 1, H, W)
        codes_c = g.op("Gather", [codes, g.const("colour", np.array(c))],
                       axis=1)  # (N, H, W)
        rows = g.op("Gather", [g.const("embed", table[c]), codes_c],
                    axis=0)  # (N, H, W, D)
        parts.append(g.op("Transpose", [rows], perm=[0, 3, 1, 2]))
    return g.op("Concat", parts, axis=1, stem="inputs")


def _finish(onnx, helper, g, model, inputs, outputs, input_type, opset):
    graph = helper.make_graph(g.nodes, f"npar_{model.kind}", inputs, outputs,
                              initializer=g.initializers)
    proto = helper.make_model(graph, producer_name="npar",
                              opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, 8)
    helper.set_model_props(proto, {"npar.kind": model.kind,
                                   "npar.config": json.dumps(model.config),
                                   "npar.input_type": input_type})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, input_type="uint8", opset=DEFAULT_OPSET):
    """Write :func:`to_onnx` of ``model`` to ``path``; returns the path."""
    onnx, _, _ = _import_onnx()
    proto = to_onnx(model, input_type, opset)
    path = os.fspath(path)
    onnx.save(proto, path)
    logger.info("wrote %s (%d nodes)", path, len(proto.graph.node))
    return path


def run_onnx(model_or_path, x, labels=None):
    """Logits of ``x`` by ONNX Runtime (CPU), for checks.

    Args:
        model_or_path: an ``onnx.ModelProto`` or the path of an ``.onnx`` file.
        x: ``(N, C, H, W)`` uint8 or float32, or WaveNet codes ``(N, T)``, as
            the graph's input expects (other integer dtypes are converted).
        labels: ``(N,)`` classes for a class-conditional Gated PixelCNN.

    Returns:
        logits ``(N, C, H, W, V)`` float32.
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "running an ONNX graph needs onnxruntime: pip install 'npar[onnx]'"
        ) from error
    if not isinstance(model_or_path, (str, os.PathLike)):
        model_or_path = model_or_path.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model_or_path, options,
                                           providers=["CPUExecutionProvider"])
    x = np.asarray(x)
    declared = {"tensor(uint8)": np.uint8, "tensor(int64)": np.int64}.get(
        session.get_inputs()[0].type)
    if declared is not None and x.dtype.kind in "iu" and x.dtype != declared:
        info = np.iinfo(declared)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise ValueError(f"x holds values {x.min()}..{x.max()} that do not fit "
                             f"the graph's {np.dtype(declared)} input")
        x = x.astype(declared)
    feeds = {"x": np.ascontiguousarray(x)}
    if labels is not None:
        feeds["labels"] = np.asarray(labels, dtype=np.int64)
    return session.run(["logits"], feeds)[0]
