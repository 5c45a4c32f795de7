"""The H.264 writer keeps what it is given, colours included; annotated copies are made small for viewing
and keep their thin lines."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from edge.publish.evidence import ANNOTATED_MAX_WIDTH, _for_viewing
from edge.video import H264Writer

_RED, _BLUE, _GREY = (0, 0, 255), (255, 0, 0), (128, 128, 128)


def _frame(w: int = 320, h: int = 240) -> np.ndarray:
    img = np.full((h, w, 3), _GREY, np.uint8)
    img[:, : w // 3] = _RED
    img[:, 2 * w // 3 :] = _BLUE
    return img


def _read_back(path) -> np.ndarray:
    with av.open(str(path)) as clip:
        return next(clip.decode(video=0)).to_ndarray(format="bgr24")


def test_a_written_frame_reads_back_with_its_colours_in_place(tmp_path):
    img = _frame()
    with H264Writer(tmp_path / "c.mp4", 320, 240, 25.0, crf=10, threads=1) as writer:
        for _ in range(3):
            writer.write(img)
    back = _read_back(tmp_path / "c.mp4").astype(int)
    red, grey, blue = back[120, 50], back[120, 160], back[120, 270]
    assert red[2] > 200 and red[0] < 60  # red stays red: no swap of channels or of U and V
    assert blue[0] > 200 and blue[2] < 60
    assert np.abs(grey - 128).max() <= 6  # grey stays grey, at its level


def test_an_odd_sized_frame_is_written_cropped_to_even_sizes(tmp_path):
    with H264Writer(tmp_path / "odd.mp4", 321, 241, 25.0, threads=1) as writer:
        writer.write(_frame(321, 241))
    assert _read_back(tmp_path / "odd.mp4").shape == (240, 320, 3)


@pytest.mark.parametrize("size", [(1920, 1080), (2560, 1440)])
def test_an_annotated_frame_is_made_viewing_size_and_a_thin_line_drawn_on_it_stays_visible(size):
    w, h = size
    img = np.full((h, w, 3), _GREY, np.uint8)
    cv2.line(img, (w // 2, 0), (w // 2, h - 1), _RED, 2, cv2.LINE_AA)  # as thin as a trajectory is drawn
    small = _for_viewing(img)
    assert small.shape == (720, ANNOTATED_MAX_WIDTH, 3)
    assert small[:, :, 2].max() > 200 and small[:, :, 0].min() < 80  # the line is still red and still there


@pytest.mark.parametrize("size", [(1920, 1080), (2688, 1520), (3200, 1800)])
@pytest.mark.parametrize("row_offset", range(4))
def test_a_one_pixel_floor_line_keeps_a_fifth_of_its_contrast_in_the_viewing_copy(size, row_offset):
    w, h = size
    img = np.full((h, w, 3), 40, np.uint8)
    img[h // 2 + row_offset, :] = 255  # a floor line is drawn 1 px wide, on any row
    weakest = _for_viewing(img)[:, :, 1].astype(int).max(axis=0).min()  # its faintest column
    # Area averaging keeps 1/factor of it; linear interpolation beyond a factor of 2 skips whole rows.
    assert weakest >= 40 + (255 - 40) / 5


def test_a_frame_already_small_enough_is_not_resized():
    img = _frame(1280, 720)
    assert _for_viewing(img) is img
