"""The shared checks: whole numbers, real numbers and the one "(H, W) image in [0, 1]" check."""

import numpy as np
import pytest
import torch

from unetlab.checks import check_unit_values, gray_image, is_fraction, is_int, is_real
from unetlab.data import SyntheticDefects
from unetlab.model import UNet
from unetlab.real import RandomCrops


def test_whole_and_real_numbers_accept_numpy_scalars_and_never_a_bool():
    assert all(is_int(v) for v in (0, 7, np.int64(3), np.uint8(2)))
    assert not any(is_int(v) for v in (True, False, np.bool_(True), 2.0, "3", None))
    assert all(is_real(v) for v in (0, 2.5, np.float32(0.5), np.int16(4), float("nan")))
    assert not any(is_real(v) for v in (True, np.bool_(False), "1.0", None, 1j))
    assert is_fraction(0) and is_fraction(1.0) and is_fraction(np.float32(0.25))
    assert not any(is_fraction(v) for v in (-0.1, 1.5, float("nan"), True))


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_count_of_samples(value):
    with pytest.raises(ValueError, match="needs n >= 1 samples; got"):
        SyntheticDefects(value)


def test_numpy_integers_are_stored_as_plain_ints():
    ds = SyntheticDefects(np.int64(3), seed=np.int32(1), crop=np.int64(16))
    assert (type(ds.n), type(ds.seed), type(ds.crop)) == (int, int, int) and len(ds) == 3
    assert all(type(v) is int for v in UNet(base=np.int64(4), depth=np.int64(2)).config.values())


def test_gray_image_returns_float32_and_reads_uint8_only_when_asked():
    gray = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_array_equal(gray_image(gray, "x", uint8=True), gray.astype(np.float32) / 255)
    as_float = np.array([[0.0, 0.5]], np.float64)
    assert gray_image(as_float, "x").dtype == np.float32
    with pytest.raises(ValueError, match=r"x: expected float images in \[0, 1\]; got dtype uint8 \(8-bit gray"):
        gray_image(gray, "x")


@pytest.mark.parametrize("image, message", [
    (np.zeros((4, 5, 3), np.float32), r"x: expected a grayscale \(H, W\) image \(a colour image\?.*\(4, 5, 3\)"),
    (np.zeros(5, np.float32), r"x: expected a grayscale \(H, W\) image; got shape \(5,\)"),
    (np.zeros((0, 5), np.float32), "non-empty image"),
    (np.full((2, 2), np.nan, np.float32), "NaN or infinite"),
    (np.full((2, 2), np.inf, np.float32), "NaN or infinite"),
    (np.full((2, 2), 200.0), r"values in \[0, 1\]; got values 200\.\.200 \(they look like 0\.\.255 gray levels"),
    (np.full((2, 2), -0.5), r"values in \[0, 1\]; got values -0\.5\.\.-0\.5$"),
    (np.zeros((2, 2), np.int32), r"float images in \[0, 1\] or uint8 gray levels; got dtype int32$"),
])
def test_gray_image_refuses_everything_but_a_gray_image_in_0_1(image, message):
    with pytest.raises(ValueError, match=message):
        gray_image(image, "x", uint8=True)


def test_tensors_are_checked_by_the_same_rule():
    check_unit_values(torch.rand(2, 1, 4, 4), "t:", uint8=False)
    check_unit_values(torch.zeros(2, 2, dtype=torch.uint8), "t:", uint8=True)
    with pytest.raises(ValueError, match=r"t: float images in \[0, 1\] or uint8 gray levels; got dtype torch.int64"):
        check_unit_values(torch.zeros(2, 2, dtype=torch.int64), "t:", uint8=True)
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_unit_values(torch.tensor([0.5, float("nan")], dtype=torch.bfloat16), "t:", uint8=False)


def test_training_crops_take_float_images_only():
    mask = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match=r"image 0: expected float images in \[0, 1\]; got dtype uint8"):
        RandomCrops([np.ones((8, 8), np.uint8)], [mask], n=1, size=4)  # 0/1 as uint8: a skipped conversion
