"""Facade calibration: pixels to metres and the floor a height belongs to."""

import numpy as np
import pytest

from edge.geometry import FacadeMap

IMG = [(233.7, 899.0), (1686.3, 899.0), (1500.1, 80.6), (419.9, 80.6)]
FAC = [(7.2, 18.0), (28.8, 18.0), (36.0, 54.0), (0.0, 54.0)]


def test_calibration_points_map_onto_each_other():
    m = FacadeMap.from_points(IMG, FAC, 3.0, 1)
    assert np.allclose(m.to_facade(np.array(IMG)), FAC, atol=1e-6)
    assert np.allclose(m.to_image(np.array(FAC)), IMG, atol=1e-4)


@pytest.mark.parametrize(("height", "floor"), [(0.0, 1), (2.99, 1), (3.0, 2), (31.3, 11), (70.3, 24)])
def test_floor_is_the_storey_containing_the_height(height, floor):
    assert FacadeMap.from_points(IMG, FAC, 3.0, 1).floor_at(height) == floor


def test_ground_floor_number_shifts_floors():
    assert FacadeMap.from_points(IMG, FAC, 3.0, 2).floor_at(1.0) == 2


def test_scaled_map_agrees_on_downscaled_pixels():
    m = FacadeMap.from_points(IMG, FAC, 3.0, 1)
    half = m.scaled(0.5)
    assert np.allclose(half.to_facade(np.array(IMG) * 0.5), FAC, atol=1e-6)


def test_points_on_one_line_are_refused():
    with pytest.raises(ValueError):
        FacadeMap.from_points([(0, 0), (1, 1), (2, 2), (3, 3)], FAC, 3.0, 1)
