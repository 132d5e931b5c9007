"""ONNX export: graphs built with onnx.helper, run by ONNX Runtime, equal to
npar's logits; masks baked into the weights; the exported graph causal."""

import numpy as np
import pytest

from npar.cli import main
from npar.models.io import save
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.verify import interop
from npar.verify.onnx_export import export_onnx, run_onnx, to_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

try:
    from npar.models.wavenet import WaveNet
except ImportError:  # the WaveNet model may be absent in a partial tree
    WaveNet = None

needs_wavenet = pytest.mark.skipif(WaveNet is None, reason="no npar.models.wavenet")


def image_model(cls, image_channels=1, classes=0, seed=0):
    config = dict(cls.default_config(), image_channels=image_channels,
                  channels=2 * image_channels if image_channels > 1 else 4,
                  layers=3, kernel=3, first_kernel=5,
                  head_channels=3 * image_channels, levels=16)
    if classes:
        config["classes"] = classes
    model = cls(config, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, mask in interop.layer_masks(model).items():
        # Nonzero weights at masked taps: the export must drop them.
        model.params[name] = (model.params[name] + (mask == 0) * rng.uniform(
            0.3, 0.6, mask.shape)).astype(np.float32)
    return model


def wavenet_model(stacks=1):
    config = dict(levels=16, channels=4, skip_channels=6, head_channels=5,
                  layers=3, stacks=stacks, kernel=2, first_kernel=3)
    return WaveNet(config, seed=3)


def images(model, n_batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.levels, (n_batch, model.image_channels, 5, 7)) \
        .astype(np.uint8)


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("input_type", ["uint8", "float"])
def test_onnx_logits_equal_npar(cls, image_channels, input_type):
    model = image_model(cls, image_channels)
    x = images(model)
    feed = x
    if input_type == "float":
        feed = (x.astype(np.float32) * np.float32(2.0 / (model.levels - 1))
                - np.float32(1.0))
    logits = run_onnx(to_onnx(model, input_type=input_type), feed)
    assert logits.shape == (2, image_channels, 5, 7, model.levels)
    assert logits.dtype == np.float32
    assert np.abs(logits - model.logits(x)).max() <= 1e-5


def test_onnx_has_symbolic_sizes_and_runs_on_another_image_size():
    model = image_model(GatedPixelCNN, 3)
    proto = to_onnx(model)
    dims = [d.dim_param or d.dim_value
            for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    x = np.random.default_rng(2).integers(0, 16, (3, 3, 9, 4)).astype(np.uint8)
    assert np.abs(run_onnx(proto, x) - model.logits(x)).max() <= 1e-5


def test_class_conditional_gated_pixelcnn_exports_with_labels():
    model = image_model(GatedPixelCNN, 3, classes=4)
    for name in model.params:
        if name.endswith("y.w"):  # make the class biases matter
            model.params[name] = np.random.default_rng(5).normal(
                size=model.params[name].shape).astype(np.float32)
    x, labels = images(model, 3), np.array([0, 3, 1])
    logits = run_onnx(to_onnx(model), x, labels)
    assert np.abs(logits - model.logits(x, labels=labels)).max() <= 1e-5
    other = model.logits(x, labels=np.array([2, 2, 2]))
    assert np.abs(logits - other).max() > 1e-3


@needs_wavenet
@pytest.mark.parametrize("stacks", [1, 2])
@pytest.mark.parametrize("input_type", ["uint8", "int64"])
def test_onnx_wavenet_logits_equal_npar(stacks, input_type):
    model = wavenet_model(stacks)
    q = np.random.default_rng(1).integers(0, model.levels, (2, 30))
    logits = run_onnx(to_onnx(model, input_type=input_type), q.astype(input_type))
    assert logits.shape == (2, 30, model.levels)
    assert np.abs(logits - model.logits(q)).max() <= 1e-5


def test_masks_are_baked_into_the_exported_weights():
    """Every masked tap is exactly zero in the ONNX initializers (the model's
    own weights are nonzero there) and every other weight is kept."""
    model = image_model(GatedPixelCNN, 3)
    proto = to_onnx(model)
    stored = {}
    for tensor in proto.graph.initializer:
        stem = tensor.name.rsplit("_", 1)[0]
        stored[stem] = onnx.numpy_helper.to_array(tensor)
    for name, mask in interop.layer_masks(model).items():
        w = stored[name].reshape(mask.shape)
        assert np.count_nonzero(model.params[name] * (mask == 0)) > 0
        assert not w[mask == 0].any(), name
        assert np.array_equal(w[mask != 0], model.params[name][mask != 0]), name


def test_graph_uses_only_plain_onnx_operators():
    model = image_model(GatedPixelCNN, 1)
    ops = {node.op_type for node in to_onnx(model).graph.node}
    assert ops <= {"Cast", "Mul", "Sub", "Conv", "Add", "Split", "Tanh", "Sigmoid",
                   "Pad", "Slice", "Relu", "Transpose", "Reshape"}
    assert {"Conv", "Split", "Pad", "Slice"} <= ops


def test_exported_graph_passes_npar_verify_as_a_causal_reference(tmp_path, capsys):
    """ONNX Runtime as the 'other framework': its logits and probe logits,
    judged by npar verify, agree with npar and are causal."""
    model = image_model(GatedPixelCNN, 3)
    save(model, tmp_path / "model.npz")
    export_onnx(model, tmp_path / "model.onnx")
    x = images(model)
    probes, base = interop.causal_probes(x, 40, levels=model.levels)
    np.savez(tmp_path / "ref.npz", x=x,
             logits=run_onnx(str(tmp_path / "model.onnx"), x), **{
                 "causal.x": probes, "causal.base": base,
                 "causal.logits": run_onnx(str(tmp_path / "model.onnx"), probes)})
    status = main(["verify", str(tmp_path / "model.npz"), str(tmp_path / "ref.npz")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "reference causality: causal" in out


def test_export_command_writes_onnx(tmp_path):
    model = image_model(PixelCNN, 3)
    save(model, tmp_path / "model.npz")
    assert main(["export", str(tmp_path / "model.npz"), "--to", "onnx", "--out",
                 str(tmp_path / "m.onnx")]) == 0
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    x = images(model)
    assert np.abs(run_onnx(str(tmp_path / "m.onnx"), x) - model.logits(x)).max() \
        <= 1e-5


def test_bad_export_options_are_explained():
    model = image_model(PixelCNN, 1)
    with pytest.raises(ValueError, match="input_type of a pixelcnn must be one of"):
        to_onnx(model, input_type="int64")
    with pytest.raises(ValueError, match="opset must be >= 13"):
        to_onnx(model, opset=11)
    # An opset beyond the onnx package's used to be written, and the file
    # then failed to load in ONNX Runtime.
    with pytest.raises(ValueError, match="opset must be <= .*got 999"):
        to_onnx(model, opset=999)
