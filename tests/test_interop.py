"""Interoperability: npar against idiomatic PyTorch twins with the same
weights (logits and gradients), the state_dict name mapping and its round
trip, Julia's kernel layout and flip, and ``npar verify`` / ``npar export``
on references with planted mistakes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.cli import main
from npar.models.io import save
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.ops.conv2d import conv2d_reference
from npar.ops.masks import causal_mask, centred_padding
from npar.verify import interop

try:
    from npar.models.wavenet import WaveNet
except ImportError:  # the WaveNet model may be absent in a partial tree
    WaveNet = None

needs_wavenet = pytest.mark.skipif(WaveNet is None, reason="no npar.models.wavenet")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image_model(cls, image_channels=1, layers=2, seed=0, levels=16, classes=0,
                embedding=0):
    config = dict(cls.default_config(), image_channels=image_channels,
                  channels=2 * image_channels if image_channels > 1 else 4,
                  layers=layers, kernel=3, first_kernel=5,
                  head_channels=3 * image_channels, levels=levels)
    if classes:
        config["classes"] = classes
    if embedding:
        config["embedding"] = embedding
    return cls(config, seed=seed)


def wavenet_model(stacks=1, seed=0):
    config = dict(levels=16, channels=4, skip_channels=6, head_channels=5,
                  layers=3, stacks=stacks, kernel=2, first_kernel=3)
    return WaveNet(config, seed=seed)


def fill_masked_taps(model, seed=0):
    """Put nonzero values at every masked tap: npar and a correct twin must
    both ignore them, and a wrong mask tap then changes the logits."""
    rng = np.random.default_rng(seed)
    for name, mask in interop.layer_masks(model).items():
        noise = rng.uniform(0.3, 0.6, mask.shape) * rng.choice([-1, 1], mask.shape)
        model.params[name] = (model.params[name] + (mask == 0) * noise).astype(
            model.params[name].dtype)
    return model


def labels_for(model, n_batch=2):
    """``{"labels": ...}`` for a class-conditional model, else ``{}``."""
    classes = model.config.get("classes", 0)
    return {"labels": np.arange(n_batch) % classes} if classes else {}


def inputs_for(model, n_batch=2, seed=0):
    rng = np.random.default_rng(seed)
    if model.kind == "wavenet":
        return rng.integers(0, model.levels, (n_batch, 24))
    return rng.integers(0, model.levels, (n_batch, model.image_channels, 5, 6),
                        dtype=np.int64).astype(np.uint8)


MODELS = [
    pytest.param(lambda: image_model(GatedPixelCNN, 1), id="gated-grey"),
    pytest.param(lambda: image_model(GatedPixelCNN, 3), id="gated-rgb"),
    pytest.param(lambda: image_model(GatedPixelCNN, 3, classes=3),
                 id="gated-rgb-classes"),
    pytest.param(lambda: image_model(PixelCNN, 1), id="plain-grey"),
    pytest.param(lambda: image_model(PixelCNN, 3), id="plain-rgb"),
    pytest.param(lambda: wavenet_model(1), id="wavenet", marks=needs_wavenet),
    pytest.param(lambda: wavenet_model(2), id="wavenet-2-stacks",
                 marks=needs_wavenet),
    pytest.param(lambda: image_model(GatedPixelCNN, 3, embedding=2),
                 id="gated-rgb-embedding"),
    # (seed 0 of this tiny model starts with every head unit dead.)
    pytest.param(lambda: image_model(PixelCNN, 1, embedding=3, seed=1),
                 id="plain-grey-embedding"),
]


# ---- without torch ----------------------------------------------------------


def test_library_imports_and_exports_npz_without_torch_or_onnx(tmp_path):
    """With torch, onnx and onnxruntime unimportable, the interop modules and
    commands import, weights round-trip through .npz, and asking for a .pt
    file says that torch is missing."""
    script = f"""
import sys
for name in ("torch", "onnx", "onnxruntime"):
    sys.modules[name] = None
import numpy as np
from npar.models.pixelcnn import GatedPixelCNN
from npar.verify import interop, onnx_export
import npar.commands.verify, npar.commands.export
m = GatedPixelCNN(dict(GatedPixelCNN.default_config(), channels=4, layers=1,
                       head_channels=4, levels=8))
interop.save_state_dict(m, {str(tmp_path / 'w.npz')!r})
back = interop.import_weights({str(tmp_path / 'w.npz')!r})
assert all(np.array_equal(m.params[k], back.params[k]) for k in m.params)
for call in (lambda: interop.save_state_dict(m, {str(tmp_path / 'w.pt')!r}),
             lambda: onnx_export.to_onnx(m)):
    try:
        call()
    except ImportError as error:
        print("ImportError:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "needs PyTorch" in lines[0] and "npar[torch]" in lines[0]
    assert "needs the onnx package" in lines[1]


# ---- names and round trips --------------------------------------------------


def test_name_table_pairs_follow_the_documented_patterns():
    """The weight rows of the tables in docs/interop.md, with {i} filled in
    and with their biases (.b <-> .bias), cover name_table exactly."""
    with open(os.path.join(ROOT, "docs", "interop.md")) as handle:
        doc = handle.read()
    pairs = []
    for line in doc.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in interop.KINDS and "." in cells[1]:
            pairs.append(tuple(cells[:3]))
    models = [image_model(GatedPixelCNN, 3, layers=3, classes=2),
              image_model(PixelCNN, 3, layers=3)]
    if WaveNet is not None:
        models.append(wavenet_model(2))
    for model in models:
        table = {(row.npar, row.foreign) for row in interop.name_table(model)}
        documented = set()
        for kind, npar_name, foreign_name in pairs:
            if kind != model.kind:
                continue
            for i in range(8):
                j = i + 1 if "{i+1}" in npar_name else i
                pair = (npar_name.replace("{i+1}", str(j)).replace("{i}", str(i)),
                        foreign_name.replace("{i}", str(i)))
                bias = (pair[0][:-2] + ".b", pair[1].replace(".weight", ".bias"))
                documented.update(p for p in (pair, bias) if p in table)
                if "{i" not in npar_name:
                    break
        assert documented == table, sorted(table - documented)


@pytest.mark.parametrize("make", MODELS)
def test_state_dict_round_trip_is_exact(make, tmp_path):
    model = make()
    state_dict = interop.to_state_dict(model)
    back = interop.from_state_dict(state_dict, config={"stacks": 2}
                                   if model.config.get("stacks") == 2 else None)
    assert back.kind == model.kind and back.config == model.config
    for name, value in model.params.items():
        assert back.params[name].dtype == value.dtype
        assert np.array_equal(back.params[name], value), name
    path = interop.save_state_dict(model.astype(np.float64), tmp_path / "w.npz")
    again = interop.import_weights(path, kind=model.kind,
                                   config={"stacks": model.config.get("stacks", 1)}
                                   if model.kind == "wavenet" else None)
    for name, value in model.params.items():
        assert again.params[name].dtype == np.float64
        assert np.array_equal(again.params[name], value.astype(np.float64)), name


def test_import_zeroes_masked_taps_and_keeps_the_forward_pass():
    model = fill_masked_taps(image_model(GatedPixelCNN, 3), seed=4)
    x = inputs_for(model)
    back = interop.from_state_dict(interop.to_state_dict(model))
    for name, mask in interop.layer_masks(model).items():
        assert np.count_nonzero(model.params[name] * (mask == 0)) > 0
        assert np.count_nonzero(back.params[name] * (mask == 0)) == 0
    assert np.array_equal(back.logits(x), model.logits(x))
    kept = interop.from_state_dict(interop.to_state_dict(model), zero_masked=False)
    for name, value in model.params.items():
        assert np.array_equal(kept.params[name], value)


def test_from_state_dict_explains_what_is_wrong():
    model = image_model(GatedPixelCNN, 1)
    state_dict = interop.to_state_dict(model)
    missing = dict(state_dict)
    del missing["layers.1.h_conv.bias"]
    with pytest.raises(ValueError, match=r"missing \['layers.1.h_conv.bias'\]"):
        interop.from_state_dict(missing)
    renamed = dict(state_dict)
    renamed["layers.0.hconv.weight"] = renamed.pop("layers.0.h_conv.weight")
    with pytest.raises(ValueError, match="unexpected.*layers.0.hconv.weight"):
        interop.from_state_dict(renamed)
    with pytest.raises(ValueError, match="cannot tell the model kind"):
        interop.from_state_dict({"fc.weight": np.zeros((2, 2), np.float32)})
    mixed = dict(state_dict)
    mixed["head1.bias"] = mixed["head1.bias"].astype(np.float64)
    with pytest.raises(TypeError, match="must all be float32 or all float64"):
        interop.from_state_dict(mixed)
    shaped = dict(state_dict)
    shaped["layers.1.v_to_h.weight"] = np.zeros((8, 8, 1, 2), np.float32)
    with pytest.raises(ValueError, match=r"layers.1.v_to_h.weight has shape"):
        interop.from_state_dict(shaped)
    with pytest.raises(ValueError, match="unknown model kind|no weight mapping"):
        interop.from_state_dict(state_dict, kind="transformer")


def test_a_carried_mask_that_admits_a_future_tap_is_refused():
    """A foreign state_dict with its masks: the first layer's horizontal mask
    with its centre tap opened (type B where npar has type A)."""
    model = image_model(GatedPixelCNN, 1)
    state_dict = interop.to_state_dict(model)
    mask = interop.layer_masks(model)["l0.h.w"].copy()
    state_dict["layers.0.h_conv.mask"] = mask
    assert interop.mask_findings(model, state_dict) == []
    interop.from_state_dict(state_dict)  # the right mask loads

    mask[5, 0, 0, 2] = 1.0
    findings = interop.mask_findings(model, state_dict)
    assert findings == [dict(layer="l0.h.w", foreign="layers.0.h_conv.mask",
                             admitted=[(5, 0, 0, 2)], hidden=[])]
    with pytest.raises(ValueError, match=r"layers.0.h_conv.mask admits taps "
                                         r"\[\(5, 0, 0, 2\)\]"):
        interop.from_state_dict(state_dict)


# ---- npar against PyTorch ---------------------------------------------------


def _relative(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npar_and_pytorch_agree_on_logits_and_gradients(make, dtype):
    """Same weights (masked taps nonzero, so both masks are exercised):
    logits to 1e-5 (float32) / 1e-10 (float64), mean NLL likewise, gradients
    of every parameter to relative 1e-10 in float64 (1e-4 in float32), and
    exactly zero gradient at every masked tap in both."""
    torch = pytest.importorskip("torch")
    model = fill_masked_taps(make(), seed=1).astype(dtype)
    x, labels = inputs_for(model), labels_for(model)
    module = interop.torch_module(model)

    logits = module(torch.from_numpy(x), **labels)
    assert logits.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert np.abs(model.logits(x, **labels) - logits.detach().numpy()).max() <= tol

    loss, grads = model.loss_and_grads(x, **labels)
    torch_loss = module.loss(torch.from_numpy(x), **labels)
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) <= tol
    theirs = {name: p.grad.numpy() for name, p in module.named_parameters()}
    masks = interop.layer_masks(model)
    for row in interop.name_table(model):
        ours = grads[row.npar].reshape(row.foreign_shape)
        assert _relative(ours, theirs[row.foreign]) <= (
            1e-4 if dtype == np.float32 else 1e-10), row.npar
        if row.npar in masks:
            hidden = (masks[row.npar] == 0).reshape(row.foreign_shape)
            assert not ours[hidden].any() and not theirs[row.foreign][hidden].any()


@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
def test_pytorch_masks_rebuilt_from_the_rule_equal_npar_masks(cls, image_channels):
    pytest.importorskip("torch")
    model = image_model(cls, image_channels, layers=3)
    module = interop.torch_module(model)
    modules = dict(module.named_modules())
    masks = interop.layer_masks(model)
    for row in interop.name_table(model):
        if not row.npar.endswith(".w"):
            continue
        theirs = modules[row.foreign.rsplit(".", 1)[0]].mask
        ours = masks.get(row.npar)
        if ours is None:  # npar leaves an all-ones mask out
            assert theirs is None or bool((theirs == 1).all()), row.npar
        else:
            assert np.array_equal(theirs.numpy().reshape(row.npar_shape), ours), \
                row.npar


@pytest.mark.parametrize("make", MODELS[:6] + MODELS[7:])
def test_torch_state_dict_file_round_trip(make, tmp_path):
    """.pt written by npar loads strictly into the idiomatic module, and the
    module's own state_dict, saved by torch, imports back exactly."""
    torch = pytest.importorskip("torch")
    from npar.verify.torch_modules import MODULES

    model = make()
    path = interop.save_state_dict(model, tmp_path / "w.pt")
    module = MODULES[model.kind](model.config)
    module.load_state_dict(torch.load(path, weights_only=True), strict=True)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "wrapped.pt")
    back = interop.import_weights(tmp_path / "wrapped.pt")
    for name, value in model.params.items():
        assert np.array_equal(back.params[name], value), name


# ---- Julia ------------------------------------------------------------------


def test_julia_emulation_on_a_hand_worked_example():
    """A true convolution of a unit impulse reproduces the kernel; a
    cross-correlation reproduces it reversed (width axis, Julia WHCN)."""
    x = np.zeros((5, 1, 1, 1))
    x[2, 0, 0, 0] = 1.0
    u = np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1)
    true_conv = interop.julia_conv_reference(x, u, pad=(1, 1, 0, 0))
    cross = interop.julia_conv_reference(x, u, pad=(1, 1, 0, 0),
                                         cross_correlation=True)
    assert true_conv[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 0.0]
    assert cross[:, 0, 0, 0].tolist() == [0.0, 3.0, 2.0, 1.0, 0.0]


def test_julia_kernel_layout_and_round_trip():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 2, 5))
    u = interop.to_julia_kernel(w)
    assert u.shape == (5, 2, 3, 4)
    assert u[1, 0, 2, 3] == w[3, 2, 1, 3]  # (q, p) = (1, 0) <- (K_h-1, K_w-2)
    assert interop.to_julia_kernel(w, flipped=False)[1, 0, 2, 3] == w[3, 2, 0, 1]
    for flipped in (True, False):
        back = interop.from_julia_kernel(interop.to_julia_kernel(w, flipped), flipped)
        assert np.array_equal(back, w)
    w1 = rng.normal(size=(4, 3, 2))
    assert interop.to_julia_kernel(w1).shape == (2, 3, 4)
    assert np.array_equal(interop.from_julia_kernel(interop.to_julia_kernel(w1)), w1)
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        interop.to_julia_kernel(np.zeros((4, 3)))


def _dependence(x_shape, u, pad, dilation, cross_correlation):
    """Which input (c, i, j) each output (o, i, j) of the emulated Julia layer
    depends on: the layer is linear, so apply it to every unit input."""
    n_in = int(np.prod(x_shape))
    units = np.eye(n_in).reshape((n_in,) + x_shape)  # (M, C, H, W) in npar order
    y = interop.julia_conv_reference(interop.to_julia_image(units), u, pad, dilation,
                                     cross_correlation)
    y = interop.from_julia_image(y)  # (M, C_out, H, W)
    return np.abs(y) > 0


@settings(max_examples=200, deadline=None)
@given(kernel=st.sampled_from([3, 5]), dilation=st.sampled_from([1, 2]),
       c_in=st.integers(1, 2), c_out=st.integers(1, 2), data=st.data())
def test_a_type_a_mask_leaks_the_future_when_the_julia_flip_is_forgotten(
        kernel, dilation, c_in, c_out, data):
    """A type-A kernel moved to Julia's layout with the flip and applied as
    Julia's true convolution equals npar's masked cross-correlation and is
    causal; moved without the flip, the same true convolution makes some
    output pixel p depend on an input pixel q > p."""
    height = data.draw(st.integers(dilation + 1, 5))
    width = data.draw(st.integers(dilation + 1, 5))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    shape = (c_out, c_in, kernel, kernel)
    mask = causal_mask(shape, "A")
    w = rng.uniform(0.5, 1.0, shape) * rng.choice([-1.0, 1.0], shape) * mask
    padding = centred_padding(kernel, kernel, (dilation, dilation))
    pad = interop.julia_padding(padding)

    x = rng.normal(size=(2, c_in, height, width))
    y_npar = conv2d_reference(x, w, padding=padding, dilation=dilation)
    y_julia = interop.julia_conv_reference(
        interop.to_julia_image(x), interop.to_julia_kernel(w, flipped=True), pad,
        (dilation, dilation))
    assert np.allclose(interop.from_julia_image(y_julia), y_npar, rtol=0,
                       atol=1e-12)

    pixel = np.arange(height * width).reshape(height, width)
    source = np.broadcast_to(pixel, (c_in, height, width)).reshape(-1)
    target = np.broadcast_to(pixel, (c_out, height, width)).reshape(-1)
    future = source[:, None] >= target[None, :]  # input q >= output p

    flipped = _dependence((c_in, height, width), interop.to_julia_kernel(w), pad,
                          (dilation, dilation), cross_correlation=False)
    assert not (flipped.reshape(len(source), -1) & future).any()

    unflipped = _dependence((c_in, height, width),
                            interop.to_julia_kernel(w, flipped=False), pad,
                            (dilation, dilation), cross_correlation=False)
    leaks = unflipped.reshape(len(source), -1) & future
    assert leaks.any()
    assert not (leaks & (source[:, None] == target[None, :])).any()  # q > p


def test_julia_export_holds_every_kernel_in_julia_layout():
    model = image_model(PixelCNN, 1)
    weights = interop.to_julia(model)
    state_dict = interop.to_state_dict(model)
    assert set(weights) == set(state_dict)
    for name, value in state_dict.items():
        if value.ndim == 4:
            assert weights[name].shape == value.shape[::-1]
            assert np.array_equal(interop.from_julia_kernel(weights[name]), value)
        else:
            assert np.array_equal(weights[name], value)


# ---- npar verify ------------------------------------------------------------


def _reference(module, x, n_probes=None):
    n_probes = x[0].size if n_probes is None else n_probes
    probes, base = interop.causal_probes(x, n_probes, levels=module.levels, seed=3)
    return interop.reference_from_torch(module, x, probes, base)


def _verify(tmp_path, model_path, arrays, *extra, capsys=None):
    ref = tmp_path / "reference.npz"
    np.savez(ref, **arrays)
    out = tmp_path / "report.json"
    status = main(["verify", str(model_path), str(ref), "--json", str(out), *extra])
    with open(out) as handle:
        report = json.load(handle)
    text = capsys.readouterr().out if capsys else ""
    return status, report, text


def _entry(report, name):
    return next(e for e in report["tensors"] if e["name"] == name)


def test_verify_agrees_with_a_faithful_pytorch_reference(tmp_path, capsys):
    pytest.importorskip("torch")
    model = fill_masked_taps(image_model(GatedPixelCNN, 3), seed=2)
    save(model, tmp_path / "model.npz")
    x = inputs_for(model)
    status, report, text = _verify(
        tmp_path, tmp_path / "model.npz",
        _reference(interop.torch_module(model), x, n_probes=30), capsys=capsys)
    assert status == 0, text
    assert report["ok"] and report["causal"]["causal"] is True
    assert all(e["ok"] for e in report["tensors"])
    assert _entry(report, "logits")["max_rel"] < 1e-5
    assert len([e for e in report["tensors"] if e["name"].startswith("grad.")]) \
        == len(model.params)
    assert "verdict: AGREES" in text and "reference causality: causal" in text


def test_verify_pinpoints_one_wrong_mask_tap_in_the_gated_reference(tmp_path,
                                                                     capsys):
    """The PyTorch reference opens ONE masked tap: the centre of the first
    layer's horizontal kernel from input 0 to gate channel 0, so that
    channel sees the pixel it predicts. npar verify names l0.h.w, says the
    logits and gradients differ and that the reference is not causal, with
    the leaking logit at offset 0 from the changed pixel."""
    torch = pytest.importorskip("torch")
    model = fill_masked_taps(image_model(GatedPixelCNN, 1, layers=3), seed=5)
    save(model, tmp_path / "model.npz")
    module = interop.torch_module(model)
    centre = model.config["first_kernel"] // 2
    assert module.layers[0].h_conv.mask[0, 0, 0, centre] == 0
    with torch.no_grad():
        module.layers[0].h_conv.mask[0, 0, 0, centre] = 1.0
    x = inputs_for(model)

    status, report, text = _verify(tmp_path, tmp_path / "model.npz",
                                   _reference(module, x), capsys=capsys)
    assert status == 3
    assert not report["ok"]
    assert not _entry(report, "logits")["ok"]
    assert not _entry(report, "grad.l0.h.w")["ok"]
    assert _entry(report, "grad.l0.h.w")["foreign"] == "layers.0.h_conv.weight"
    assert [e["param"] for e in report["masked_taps"]] == ["l0.h.w"]
    assert report["masked_taps"][0]["taps"] == [[0, 0, 0, centre]]
    assert report["suspects"][0] == "l0.h.w"
    causal = report["causal"]
    assert causal["causal"] is False and causal["n_violations"] > 0
    for violation in causal["violations"]:
        assert violation["logit"] == violation["changed"]  # offset 0: itself
    assert "MASKED TAPS LIVE in l0.h.w [layers.0.h_conv.weight]" in text
    assert "REFERENCE NOT CAUSAL" in text
    assert "look first at: l0.h.w" in text
    assert "reference causality: NOT causal" in text


def test_verify_pinpoints_a_wrong_tap_in_the_plain_pixelcnn(tmp_path, capsys):
    """Plain PixelCNN reference whose second block's conv_a reads the
    features of the pixel to the right (one tap of a type-B mask opened):
    named as l2.a.w. Those features already saw x at (i, j), so the probes
    find the logits at (i, j) moving with x at (i, j) itself."""
    torch = pytest.importorskip("torch")
    model = fill_masked_taps(image_model(PixelCNN, 1, layers=2), seed=6)
    save(model, tmp_path / "model.npz")
    module = interop.torch_module(model)
    with torch.no_grad():
        module.blocks[1].conv_a.mask[2, 1, 1, 2] = 1.0
    x = inputs_for(model)

    status, report, text = _verify(tmp_path, tmp_path / "model.npz",
                                   _reference(module, x), capsys=capsys)
    assert status == 3
    assert report["suspects"][0] == "l2.a.w"
    assert report["masked_taps"][0]["foreign"] == "blocks.1.conv_a.weight"
    assert report["masked_taps"][0]["taps"] == [[2, 1, 1, 2]]
    offsets = {(v["logit"][1] - v["changed"][1], v["logit"][2] - v["changed"][2])
               for v in report["causal"]["violations"]}
    assert offsets == {(0, 0)}
    assert "offset of the logit from the change: i +0, j +0" in text


def test_verify_catches_a_wrong_tap_whose_weight_is_zero_by_its_gradient(
        tmp_path, capsys):
    """Fresh npar weights are zero at masked taps, so an opened mask tap does
    not change the logits; only the reference's gradient at that tap shows
    that its graph reads the future."""
    torch = pytest.importorskip("torch")
    model = image_model(GatedPixelCNN, 1)
    save(model, tmp_path / "model.npz")
    module = interop.torch_module(model)
    with torch.no_grad():
        module.layers[0].h_conv.mask[3, 0, 0, 2] = 1.0
    status, report, text = _verify(tmp_path, tmp_path / "model.npz",
                                   _reference(module, inputs_for(model), 12),
                                   capsys=capsys)
    assert status == 3
    assert _entry(report, "logits")["ok"]
    assert report["causal"]["n_violations"] == 0
    assert report["masked_taps"][0]["taps"] == [[3, 0, 0, 2]]
    assert report["causal"]["causal"] is False
    assert "reference causality: NOT causal" in text


@needs_wavenet
def test_verify_wavenet_reference_that_sees_the_current_sample(tmp_path, capsys):
    """A PyTorch WaveNet whose input layer is not delayed (h[t] reads q[t]):
    not causal, with the moved logits at the changed step itself."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    model = wavenet_model(1)
    save(model, tmp_path / "model.npz")
    module = interop.torch_module(model)

    def undelayed(q):
        onehot = F.one_hot(torch.as_tensor(q).long(), module.levels).double()
        onehot = onehot.to(module.input_conv.weight.dtype).permute(0, 2, 1)
        k0 = module.input_conv.kernel_size[0]
        h = module.input_conv(F.pad(onehot, (k0 - 1, 0)))
        skip_sum = 0
        for block in module.blocks:
            h, s = block(h)
            skip_sum = skip_sum + s
        z = module.head2(torch.relu(module.head1(torch.relu(skip_sum))))
        return z.permute(0, 2, 1)

    module.forward = undelayed
    status, report, text = _verify(tmp_path, tmp_path / "model.npz",
                                   _reference(module, inputs_for(model), 24),
                                   capsys=capsys)
    assert status == 3
    assert not _entry(report, "logits")["ok"]
    violations = report["causal"]["violations"]
    assert violations and all(v["logit"] == v["changed"] for v in violations)
    assert "offset of the logit from the change: t +0" in text


@needs_wavenet
def test_verify_accepts_a_faithful_wavenet_reference(tmp_path, capsys):
    pytest.importorskip("torch")
    model = wavenet_model(2)
    save(model, tmp_path / "model.npz")
    status, report, text = _verify(
        tmp_path, tmp_path / "model.npz",
        _reference(interop.torch_module(model), inputs_for(model), 24),
        capsys=capsys)
    assert status == 0, text
    assert report["causal"]["causal"] is True


def test_verify_reads_a_foreign_state_dict_and_reports_its_wrong_mask(tmp_path,
                                                                      capsys):
    """MODEL given as a PyTorch-named .npz (with --kind) that carries a
    mask opening one future tap; no torch needed."""
    model = fill_masked_taps(image_model(GatedPixelCNN, 1), seed=7)
    x = inputs_for(model)
    state_dict = interop.to_state_dict(model)
    mask = interop.layer_masks(model)["l0.h.w"].copy()
    mask[1, 0, 0, 2] = 1.0
    state_dict["layers.0.h_conv.mask"] = mask
    np.savez(tmp_path / "theirs.npz", **state_dict)
    arrays = {"x": x, "logits": model.logits(x)}
    status, report, text = _verify(tmp_path, tmp_path / "theirs.npz", arrays,
                                   "--kind", "gated_pixelcnn", capsys=capsys)
    assert status == 3
    assert report["model_masks"][0]["admitted"] == [[1, 0, 0, 2]]
    assert "MASK IN" in text and "layers.0.h_conv.mask admits 1 tap" in text
    assert "reference causality: not judged" in text


def test_verify_gives_clear_errors(tmp_path, capsys):
    model = image_model(GatedPixelCNN, 1)
    save(model, tmp_path / "model.npz")
    np.savez(tmp_path / "ref.npz", logits=np.zeros((1, 1, 5, 6, 16), np.float32))
    assert main(["verify", str(tmp_path / "model.npz"),
                 str(tmp_path / "ref.npz")]) == 1
    assert "no 'x' array" in capsys.readouterr().err
    x = inputs_for(model)
    np.savez(tmp_path / "ref.npz", x=x, logits=model.logits(x),
             **{"grad.l9.v.w": np.zeros(3)})
    assert main(["verify", str(tmp_path / "model.npz"),
                 str(tmp_path / "ref.npz")]) == 1
    assert "'l9.v.w' is neither an npar nor a PyTorch" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "model.npz"),
                 str(tmp_path / "missing.npz")]) == 1


@pytest.mark.parametrize("option, message", [
    (["--rtol", "-1"], "--rtol must be a finite number > 0, got -1.0"),
    (["--rtol", "nan"], "--rtol must be a finite number > 0, got nan"),
    (["--causal-rtol", "0"], "--causal-rtol must be a finite number > 0"),
    (["--config", "{bad"], "--config is not valid JSON"),
    (["--config", "[1]"], "--config must be a JSON object"),
])
def test_verify_names_bad_option_values(tmp_path, capsys, option, message):
    # A negative or NaN --rtol used to give the verdict DIFFERS (exit 3).
    model = image_model(GatedPixelCNN, 1)
    save(model, tmp_path / "model.npz")
    x = inputs_for(model)
    np.savez(tmp_path / "ref.npz", x=x, logits=model.logits(x))
    assert main(["verify", str(tmp_path / "model.npz"), str(tmp_path / "ref.npz"),
                 *option]) == 1
    assert message in capsys.readouterr().err


# ---- npar export ------------------------------------------------------------


def test_export_command_writes_npz_julia_and_torch(tmp_path, capsys):
    model = image_model(GatedPixelCNN, 3)
    save(model, tmp_path / "model.npz")
    ckpt = str(tmp_path / "model.npz")
    assert main(["export", ckpt, "--to", "npz", "--out",
                 str(tmp_path / "sd.npz")]) == 0
    back = interop.import_weights(tmp_path / "sd.npz")
    assert all(np.array_equal(back.params[k], v) for k, v in model.params.items())

    assert main(["export", ckpt, "--to", "julia", "--out",
                 str(tmp_path / "jl.npz")]) == 0
    with np.load(tmp_path / "jl.npz") as data:
        u = data["layers.0.h_conv.weight"]
    assert np.array_equal(u, interop.to_julia_kernel(model.params["l0.h.w"]))
    assert main(["export", ckpt, "--to", "julia", "--cross-correlation", "--out",
                 str(tmp_path / "jl2.npz")]) == 0
    with np.load(tmp_path / "jl2.npz") as data:
        u = data["layers.0.h_conv.weight"]
    assert np.array_equal(u, interop.to_julia_kernel(model.params["l0.h.w"],
                                                     flipped=False))
    assert main(["export", ckpt, "--to", "torch", "--out",
                 str(tmp_path / "sd.npz")]) == 1
    assert "writes a .pt file" in capsys.readouterr().err

    pytest.importorskip("torch")
    assert main(["export", ckpt, "--to", "torch", "--out",
                 str(tmp_path / "sd.pt")]) == 0
    again = interop.import_weights(tmp_path / "sd.pt")
    assert all(np.array_equal(again.params[k], v) for k, v in model.params.items())
