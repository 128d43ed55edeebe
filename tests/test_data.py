import numpy as np
import pytest

from vaedetect.data import (
    check_layout_matches,
    check_value_range,
    images_from_unit_range,
    images_to_unit_range,
    infer_layout,
)


@pytest.mark.parametrize(
    "shape, image_shape, form, channels_hw",
    [
        ((4, 7), None, "tabular", None),
        ((4, 3 * 5 * 6), (3, 5, 6), "flat", (3, 5, 6)),
        ((4, 30), (5, 6), "flat", (1, 5, 6)),
        ((4, 5, 6), None, "nhw", (1, 5, 6)),
        ((4, 3, 5, 6), None, "nchw", (3, 5, 6)),
        ((4, 1, 5, 6), None, "nchw", (1, 5, 6)),
        ((4, 5, 6, 3), None, "nhwc", (3, 5, 6)),
    ],
)
def test_layout_is_inferred_from_shape(shape, image_shape, form, channels_hw):
    layout = infer_layout(np.zeros(shape, dtype=np.float32), image_shape)
    assert layout.form == form
    if channels_hw is not None:
        assert layout.shape == channels_hw
        assert layout.n_features == int(np.prod(channels_hw))


@pytest.mark.parametrize(
    "shape, image_shape",
    [((4, 5, 6), None), ((4, 3, 5, 6), None), ((4, 5, 6, 3), None), ((4, 90), (3, 5, 6))],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_images_round_trip_through_network_range(shape, image_shape, dtype):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=shape).astype(dtype)
    if dtype != np.uint8:
        X = X / 255.0
    layout = infer_layout(X, image_shape)
    unit = images_to_unit_range(X, layout)
    assert unit.shape == (shape[0], *layout.shape)
    assert unit.min() >= -1.0 and unit.max() <= 1.0
    back = images_from_unit_range(unit, layout)
    assert back.shape == X.shape
    assert back.dtype == (np.uint8 if dtype == np.uint8 else np.float32)
    np.testing.assert_allclose(back, X, atol=1e-6)


def test_uint8_black_and_white_map_to_network_extremes():
    X = np.array([[[0, 255]]], dtype=np.uint8)
    unit = images_to_unit_range(X, infer_layout(X))
    np.testing.assert_array_equal(unit.ravel(), [-1.0, 1.0])


def test_ambiguous_channel_axis_is_refused():
    with pytest.raises(ValueError, match="ambiguous"):
        infer_layout(np.zeros((2, 3, 5, 3)))


def test_four_d_array_without_channel_axis_is_refused():
    with pytest.raises(ValueError, match="no channel axis"):
        infer_layout(np.zeros((2, 4, 5, 6)))


@pytest.mark.parametrize("ndim", [1, 5])
def test_wrong_number_of_dimensions_is_refused(ndim):
    with pytest.raises(ValueError, match=f"{ndim} dimension"):
        infer_layout(np.zeros((2,) * ndim))


def test_image_shape_must_match_row_length():
    with pytest.raises(ValueError, match="needs 30"):
        infer_layout(np.zeros((2, 31)), image_shape=(5, 6))


def test_image_shape_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="'image_shape' parameter"):
        infer_layout(np.zeros((2, 60)), image_shape=(2, 5, 6))


def test_float_images_outside_unit_range_are_refused():
    X = np.full((2, 4, 4), 1.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*1.5"):
        check_value_range(X, infer_layout(X))


def test_integer_images_above_255_are_refused():
    X = np.full((2, 4, 4), 300, dtype=np.int64)
    with pytest.raises(ValueError, match="0..255"):
        check_value_range(X, infer_layout(X))


def test_tabular_values_are_not_range_checked():
    X = np.full((2, 4), 1e6)
    check_value_range(X, infer_layout(X))


def test_layout_mismatch_names_expected_shape():
    layout = infer_layout(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"\(n, 8, 8\)"):
        check_layout_matches(np.zeros((2, 8, 9)), layout)
