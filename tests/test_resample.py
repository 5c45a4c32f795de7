"""Area downscaling: the 3/4 fast path gives OpenCV's INTER_AREA bytes exactly, other ratios are OpenCV's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.detect.resample import area_downscale


def _area(luma: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(luma, size, interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("shape", [(1440, 2560), (1520, 2688), (4, 4), (12, 8)])
def test_three_quarters_gives_the_same_bytes_as_opencv_area_averaging(shape):
    rng = np.random.default_rng(sum(shape))
    luma = rng.integers(0, 256, shape, dtype=np.uint8)
    size = (shape[1] * 3 // 4, shape[0] * 3 // 4)
    assert np.array_equal(area_downscale(luma, size), _area(luma, size))


def test_ties_are_rounded_to_even_as_opencv_rounds_them():
    # 4x4 blocks whose 3x3 means land on .5: a rounding that always goes up differs here and only here.
    block = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], np.uint8)
    for base in (0, 1, 2, 100, 254):
        luma = np.tile(block + np.uint8(base), (2, 2))
        assert np.array_equal(area_downscale(luma, (6, 6)), _area(luma, (6, 6)))


def test_the_extremes_do_not_overflow():
    for value in (0, 255):
        luma = np.full((8, 8), value, np.uint8)
        assert (area_downscale(luma, (6, 6)) == value).all()


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_other_ratios_are_opencv_area_averaging(size):
    luma = np.random.default_rng(1).integers(0, 256, (1520, 2688) if size[0] == 1920 else (1440, 2560), np.uint8)
    assert np.array_equal(area_downscale(luma, size), _area(luma, size))
