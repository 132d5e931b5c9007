"""The level embedding: kernels against their NumPy twins, clear errors, and
the models and samplers built on it. Its float64 gradient checks are in the
registry (test_gradcheck.py: embedding, gated_pixelcnn.embedding,
pixelcnn.embedding); its causality is in test_pixelcnn.py's property."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npar
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.ops.embedding import (
    embedding_backward,
    embedding_backward_reference,
    embedding_forward,
    embedding_reference,
)
from npar.sampling.pixelcnn import sample_images


@settings(max_examples=80, deadline=None)
@given(levels=st.integers(1, 9), dim=st.integers(1, 5),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_kernels_equal_their_numpy_twins(levels, dim, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, levels, shape)
    table = rng.normal(size=(levels, dim)).astype(dtype)
    y, cache = embedding_forward(codes, table)
    assert y.shape == (dim,) + shape and y.dtype == dtype
    np.testing.assert_array_equal(y, embedding_reference(codes, table))
    dy = rng.normal(size=y.shape).astype(dtype)
    np.testing.assert_allclose(embedding_backward(dy, cache),
                               embedding_backward_reference(dy, codes, levels),
                               rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


def test_unread_levels_get_zero_gradient():
    codes = np.array([[[0, 2], [2, 0]]])
    _, cache = embedding_forward(codes, np.ones((4, 2)))
    dtable = embedding_backward(np.ones((2, 1, 2, 2)), cache)
    np.testing.assert_array_equal(dtable, [[2, 2], [0, 0], [2, 2], [0, 0]])


@pytest.mark.parametrize("call,error,match", [
    (lambda: embedding_forward(np.array([[[0, 4]]]), np.zeros((4, 2))),
     ValueError, r"0\.\.3 \(the table has 4 rows\), got values from 0 to 4"),
    (lambda: embedding_forward(np.zeros((1, 2, 2)), np.zeros((4, 2))),
     TypeError, "integer"),
    (lambda: embedding_forward(np.zeros((2, 2), int), np.zeros((4, 2))),
     ValueError, r"\(N, H, W\)"),
    (lambda: embedding_forward(np.zeros((1, 2, 2), int), np.zeros((4, 2), int)),
     TypeError, "float32 or float64"),
    (lambda: embedding_backward(np.zeros((3, 1, 2, 2)), embedding_forward(
        np.zeros((1, 2, 2), int), np.zeros((4, 2)))[1]),
     ValueError, r"dy must have shape \(2, 1, 2, 2\)"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def model_with_embedding(cls, image_channels=1, embedding=3, levels=8, seed=0,
                         channels=None):
    config = cls.default_config()
    config.update(image_channels=image_channels,
                  channels=channels or 6 * image_channels, layers=2,
                  head_channels=6 * image_channels, levels=levels,
                  embedding=embedding)
    return cls(config, seed=seed)


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
@pytest.mark.parametrize("image_channels,embedding", [(1, 3), (3, 2), (1, 9)])
def test_cached_generation_equals_naive(cls, image_channels, embedding):
    # (1, 9): the first layer's 10 input channels outnumber its 6 features.
    model = model_with_embedding(cls, image_channels, embedding)
    cached = sample_images(model, 3, np.random.default_rng(4), engine="cached",
                           size=(5, 4))
    naive = sample_images(model, 3, np.random.default_rng(4), engine="naive",
                          size=(5, 4))
    np.testing.assert_array_equal(cached, naive)


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
def test_the_embedding_changes_what_the_model_computes(cls):
    """The logits read the table: changing the row of a level that the image
    uses changes the logits after it; a row no pixel uses changes nothing."""
    model = model_with_embedding(cls).astype(np.float64)
    x = np.full((1, 1, 4, 4), 5)
    x[0, 0, 0, 0] = 2
    base = model.logits(x)
    table = model.params["embed.w"]
    table[0, 2] += 1.0
    moved = model.logits(x)
    assert np.abs(moved - base).max() > 1e-6
    assert np.all(moved[0, 0, 0, 0] == base[0, 0, 0, 0])  # before the change
    table[0, 7] += 1.0
    np.testing.assert_array_equal(model.logits(x), moved)


def test_parameter_count_and_layout():
    plain = model_with_embedding(GatedPixelCNN, embedding=0)
    embedded = model_with_embedding(GatedPixelCNN, embedding=3)
    assert "embed.w" not in plain.params
    assert embedded.params["embed.w"].shape == (1, 8, 3)
    assert embedded.input_channels == 4
    # The first layer reads 1 + 3 channels instead of 1.
    assert embedded.params["l0.v.w"].shape[1] == 4
    assert plain.params["l0.v.w"].shape[1] == 1


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
def test_an_empty_batch_gives_empty_logits(cls):
    model = model_with_embedding(cls, image_channels=3, embedding=2)
    logits = model.logits(np.zeros((0, 3, 5, 5), np.uint8))
    assert logits.shape == (0, 3, 5, 5, 8)


def test_a_numpy_integer_embedding_is_stored_as_int(tmp_path):
    config = dict(GatedPixelCNN.default_config(), embedding=np.int64(2))
    model = GatedPixelCNN(config)
    assert type(model.config["embedding"]) is int
    npar.save(model, str(tmp_path / "m.npz"))
    assert npar.load(str(tmp_path / "m.npz")).embedding == 2


def test_a_foreign_table_of_the_wrong_rank_is_named():
    from npar.verify import interop

    model = model_with_embedding(GatedPixelCNN, levels=16)
    state_dict = interop.to_state_dict(model)
    state_dict["embed.weight"] = state_dict["embed.weight"][0]
    with pytest.raises(ValueError, match=r"embed.weight must have shape "
                       r"\(C, V, D\).*got \(16, 3\)"):
        interop.from_state_dict(state_dict)


def test_bad_embedding_config():
    config = GatedPixelCNN.default_config()
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="embedding must be an integer >= 0"):
            GatedPixelCNN({**config, "embedding": bad})


def test_checkpoint_round_trip(tmp_path):
    model = model_with_embedding(GatedPixelCNN, levels=256)
    path = str(tmp_path / "model.npz")
    npar.save(model, path)
    loaded = npar.load(path)
    assert loaded.embedding == 3
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 5, 5)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.logits(x), model.logits(x))


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
def test_onnx_runtime_reads_the_same_table(cls, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from npar.verify.onnx_export import export_onnx, run_onnx, to_onnx

    model = model_with_embedding(cls, image_channels=3, embedding=2, levels=16)
    x = np.random.default_rng(6).integers(0, 16, (2, 3, 5, 4)).astype(np.uint8)
    path = export_onnx(model, tmp_path / "m.onnx")
    assert np.abs(run_onnx(path, x) - model.logits(x)).max() < 1e-5
    with pytest.raises(ValueError, match="export it with input_type='uint8'"):
        to_onnx(model, input_type="float")


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
def test_the_pytorch_twin_reads_the_same_table(cls):
    """The benchmark's functional twin (same parameter dict) gives the same
    logits and table gradient as npar, in float64."""
    torch = pytest.importorskip("torch")
    from npar.verify.torch_twins import TorchPixelCNN

    model = model_with_embedding(cls, image_channels=3, embedding=2,
                                 levels=16).astype(np.float64)
    x = np.random.default_rng(5).integers(0, 16, (2, 3, 4, 5)).astype(np.uint8)
    twin = TorchPixelCNN(model, {k: v.copy() for k, v in model.params.items()})
    rows = twin(x).detach().numpy()
    logits = model.logits(x).transpose(0, 2, 3, 1, 4).reshape(rows.shape)
    np.testing.assert_allclose(rows, logits, rtol=1e-10, atol=1e-12)
    loss, grads = model.loss_and_grads(x)
    torch_loss = twin.loss(x)
    torch_loss.backward()
    assert abs(torch_loss.item() - loss) < 1e-10
    np.testing.assert_allclose(twin.grads()["embed.w"], grads["embed.w"],
                               rtol=1e-9, atol=1e-12)
    assert torch.is_tensor(torch_loss)
