"""Causal masks A and B as properties of a masked convolution."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.ops.conv2d import conv2d_forward
from npar.ops.masks import causal_mask, centred_padding, channel_groups


@st.composite
def masked_layers(draw):
    groups = draw(st.sampled_from([1, 3]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    k_h = draw(st.integers(1, 5))
    k_w = draw(st.integers(1, 5))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mask_type = draw(st.sampled_from(["A", "B"]))
    height, width = draw(st.integers(3, 6)), draw(st.integers(3, 6))
    q = (draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1)))
    q_channel = draw(st.integers(0, c_in - 1))
    seed = draw(st.integers(0, 2**31))
    return (groups, c_in, c_out, (k_h, k_w), dilation, mask_type, (height, width),
            q, q_channel, seed)


@settings(max_examples=200)
@given(masked_layers())
def test_output_ignores_inputs_at_and_after_its_position(case):
    """y at raster position p never changes when x at q >= p changes (type A
    within a colour group: only earlier groups at p itself; type B: groups up
    to its own)."""
    (groups, c_in, c_out, kernel, dilation, mask_type, size, q, q_channel,
     seed) = case
    rng = np.random.default_rng(seed)
    in_g, out_g = channel_groups(c_in, groups), channel_groups(c_out, groups)
    mask = causal_mask((c_out, c_in) + kernel, mask_type, out_g, in_g)
    w = rng.standard_normal((c_out, c_in) + kernel)
    pad = centred_padding(*kernel, dilation)
    x = rng.standard_normal((1, c_in) + size)
    y, _ = conv2d_forward(x, w, None, pad, dilation, mask)
    x2 = x.copy()
    x2[0, q_channel, q[0], q[1]] += 1.0 + rng.random()
    y2, _ = conv2d_forward(x2, w, None, pad, dilation, mask)
    changed = np.abs(y2 - y)[0] > 0  # (C_out, H, W)

    width = size[1]
    q_index = q[0] * width + q[1]
    for o in range(c_out):
        for i in range(size[0]):
            for j in range(width):
                p_index = i * width + j
                if p_index < q_index:
                    assert not changed[o, i, j]
                elif p_index == q_index:
                    allowed = (in_g[q_channel] < out_g[o] if mask_type == "A"
                               else in_g[q_channel] <= out_g[o])
                    if not allowed:
                        assert not changed[o, i, j]


def test_mask_a_and_b_by_hand():
    a = causal_mask((1, 1, 3, 3), "A")[0, 0]
    b = causal_mask((1, 1, 3, 3), "B")[0, 0]
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


def test_one_by_one_masks_have_only_the_centre():
    assert causal_mask((1, 1, 1, 1), "A").sum() == 0
    assert causal_mask((1, 1, 1, 1), "B").sum() == 1
    groups = channel_groups(3, 3)
    a = causal_mask((3, 3, 1, 1), "A", groups, groups)[:, :, 0, 0]
    b = causal_mask((3, 3, 1, 1), "B", groups, groups)[:, :, 0, 0]
    # rows: output R, G, B; columns: input R, G, B
    np.testing.assert_array_equal(a, [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(b, [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_rgb_mask_a_centre_sees_only_earlier_colours():
    groups = channel_groups(3, 3)
    m = causal_mask((3, 3, 3, 3), "A", groups, groups)
    assert m[0, :, 1, 1].sum() == 0          # R sees nothing at the centre
    np.testing.assert_array_equal(m[1, :, 1, 1], [1, 0, 0])  # G sees R
    np.testing.assert_array_equal(m[2, :, 1, 1], [1, 1, 0])  # B sees R, G
    assert np.all(m[:, :, 0, :] == 1) and np.all(m[:, :, 2, :] == 0)


def test_even_kernel_centre_and_padding():
    m = causal_mask((1, 1, 4, 4), "B")[0, 0]
    assert m[2, 2] == 1 and m[2, 3] == 0 and m[1].sum() == 4
    assert centred_padding(4, 4) == (2, 1, 2, 1)
    assert centred_padding(3, 3, (2, 3)) == (2, 2, 3, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'A' or 'B'"):
        causal_mask((1, 1, 3, 3), "C")
    with pytest.raises(ValueError, match="multiple of the number of colour groups"):
        channel_groups(4, 3)
    with pytest.raises(ValueError, match="outside"):
        causal_mask((1, 1, 3, 3), "A", centre=(3, 0))
    with pytest.raises(ValueError, match="entries"):
        causal_mask((2, 1, 3, 3), "A", out_groups=[0])
