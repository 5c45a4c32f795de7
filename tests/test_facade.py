"""Facade calibration: pixels to metres and the floor a height belongs to."""

import dataclasses

import numpy as np
import pytest

from edge.config import CameraConfig, FacadeConfig, FacadePoint
from edge.geometry import CameraGeometry, FacadeMap, camera_pose
from edge.sim.camera import PinholeCamera

from conftest import calibrated_by, posed_facade

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


@pytest.mark.parametrize("yaw", [0.0, 12.0])
def test_the_camera_s_place_is_recovered_from_a_calibration_with_perspective(yaw):
    cam = PinholeCamera.looking_up(1920, 1080, 70.0, 28.0, 18.0, 75.0, yaw_deg=yaw)
    pose = camera_pose(calibrated_by(cam).facade_to_image, (1920, 1080))
    assert pose is not None
    assert np.allclose((pose.along_m, pose.up_m, pose.distance_m), cam.position, atol=0.15)


def test_a_facade_seen_straight_on_tells_no_camera_place():
    straight = FacadeMap.from_points(
        [(0, 800), (400, 800), (400, 0), (0, 0)], [(0, 0), (40, 0), (40, 80), (0, 80)], 3.0, 1
    )
    assert camera_pose(straight.facade_to_image, (1920, 1080)) is None


def test_an_object_in_front_of_the_wall_is_placed_lower_than_the_wall_point_it_hides():
    cam = PinholeCamera.looking_up(1920, 1080, 70.0, 28.0, 18.0, 75.0)
    facade = calibrated_by(cam)
    pose = camera_pose(facade.facade_to_image, (1920, 1080))
    thrown = np.array([[20.0, 61.5, 0.5]])  # half a metre out, at 61.5 m
    hidden = facade.to_facade(cam.project(thrown)[0])[0]
    assert hidden[1] > 62.4  # seen from below, it covers the wall about a metre higher
    along, up = pose.in_front(*hidden, 0.5)
    assert abs(up - 61.5) < 0.05 and abs(along - 20.0) < 0.05
    assert np.allclose(pose.on_wall(along, up, 0.5), hidden)  # the way back, as the evidence still draws it
    assert abs(pose.out_from_wall(up, hidden[1]) - 0.5) < 1e-9


def test_points_are_brought_out_from_the_wall_only_well_short_of_a_camera_the_calibration_places():
    _, facade = posed_facade()  # the camera 28 m out
    assert facade.brings_out(0.5) and facade.wall_behind(20.0, 62.6, 0.5)[1] < 62.6  # seen from below: lower
    for out_m in (0.0, 14.1, 30.0):  # none, or past half the camera's 28 m: unbounded near the camera
        assert not facade.brings_out(out_m) and facade.wall_behind(20.0, 62.6, out_m) == (20.0, 62.6)
    unplaced = dataclasses.replace(facade, camera=None)
    assert not unplaced.brings_out(0.5) and unplaced.wall_behind(20.0, 62.6, 0.5) == (20.0, 62.6)


def test_a_camera_s_geometry_carries_its_pose_at_any_frame_size_it_sends():
    cam = PinholeCamera.looking_up(1920, 1080, 70.0, 28.0, 18.0, 75.0)
    fac = np.array([[2.0, 10.0], [34.0, 10.0], [34.0, 70.0], [2.0, 70.0]])
    img, _ = cam.project(np.column_stack([fac, np.zeros(4)]))
    points = [FacadePoint(image=tuple(i), facade=tuple(f)) for i, f in zip(img, fac, strict=True)]
    config = CameraConfig(source="rtsp://cam", facade=FacadeConfig(points=points, image_size=(1920, 1080)))
    for size in [(1920, 1080), (1280, 720)]:  # a sub-stream: the same camera, the same place
        pose = CameraGeometry.build(config, size).facade.camera
        assert pose is not None and abs(pose.distance_m - 28.0) < 0.2 and abs(pose.up_m - 1.5) < 0.1


def test_a_track_is_placed_in_front_of_the_wall_point_by_point_each_at_its_own_distance_out():
    _, facade = posed_facade()  # the camera 28 m out
    along, up = np.array([20.0, 20.0, 20.0]), np.array([62.6, 60.0, 57.0])
    out = np.array([0.5, 1.0, 1.5])
    a, u = facade.in_front(along, up, out)
    for i in range(3):  # the same as each point brought out alone
        assert np.allclose((a[i], u[i]), facade.wall_behind(along[i], up[i], out[i]))
    half = 0.5 * facade.camera.distance_m  # 14 m: past it, the correction grows without bound near the camera
    _, far = facade.in_front(along, up, np.array([half, 20.0, 100.0]))
    assert np.allclose(far, facade.camera.in_front(along, up, half)[1])  # held at the bound
    unplaced = dataclasses.replace(facade, camera=None)
    a, u = unplaced.in_front(along, up, out)
    assert np.array_equal(a, along) and np.array_equal(u, up)  # no pose: as seen
    assert unplaced.on_wall(20.0, 62.0, 0.5) == (20.0, 62.0)
    assert np.allclose(facade.on_wall(*facade.wall_behind(20.0, 62.6, 0.5), 0.5), (20.0, 62.6))  # the way back
