"""The synthetic workload: real faces composed into frames, found by the detector, at any size."""

from __future__ import annotations

import numpy as np
import pytest
from bench_helpers import needs_face_photo

from fer_edge.benchmarks.bench import default_thread_counts
from fer_edge.benchmarks.stats import fps_from_timestamps, summarize
from fer_edge.benchmarks.workload import FrameListSource, SyntheticSource, compose_frames, face_tile, grid
from fer_edge.device.detect import make_detector
from fer_edge.errors import FerEdgeError


def test_grid_uses_the_biggest_cells():
    assert grid(1, (640, 480)) == (1, 1, 480)
    assert grid(2, (640, 480)) == (2, 1, 320)
    assert grid(4, (640, 480)) == (2, 2, 240)
    with pytest.raises(FerEdgeError):
        grid(0, (640, 480))


def test_frames_hold_the_faces_inside_the_frame():
    tile = np.full((100, 100, 3), 200, np.uint8)
    frames, boxes = compose_frames((320, 240), 3, tile, distinct=5)
    assert len(frames) == 5 and all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    for placed in boxes:
        assert len(placed) == 3
        for x0, y0, x1, y1 in placed:
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    assert not all(np.array_equal(frames[0], f) for f in frames[1:])  # faces move from frame to frame


def test_too_many_faces_or_too_small_a_frame_is_a_clear_error():
    tile = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(FerEdgeError, match="do not fit"):
        compose_frames((64, 48), 30, tile)
    with pytest.raises(FerEdgeError, match="too small"):
        compose_frames((16, 16), 1, tile)


def test_frame_list_source_counts_loops_and_converts_to_gray():
    images = [np.full((10, 12, 3), v, np.uint8) for v in (10, 20)]
    with FrameListSource(images, count=5) as source:
        frames = list(iter(source.read, None))  # buffers are reused: read values before the next read
        assert source.read() is None
    assert len(frames) == 5 and frames[0].gray.shape == (10, 12)
    with FrameListSource(images, count=5) as source:
        grays = [int(frame.gray[0, 0]) for frame in iter(source.read, None)]
    assert grays == [10, 20, 10, 20, 10]
    with pytest.raises(FerEdgeError, match="no frames"):
        FrameListSource([])


@needs_face_photo
@pytest.mark.parametrize("faces, size", [(1, (640, 480)), (3, (640, 480)), (4, (320, 240))])
def test_the_detector_finds_every_composed_face(shipped_bundle, faces, size):
    detector = make_detector("blazeface", shipped_bundle)
    source = SyntheticSource(size, faces, count=4, distinct=4)
    found = [len(detector(frame.gray)) for frame in iter(source.read, None)]
    assert found == [faces] * 4


@needs_face_photo
def test_face_tile_is_square_around_the_astronaut():
    tile = face_tile()
    assert tile.shape[0] == tile.shape[1] and tile.shape[2] == 3 and tile.shape[0] > 100


def test_default_threads_are_capped_at_the_cores():
    assert default_thread_counts(1) == [1]
    assert default_thread_counts(2) == [1, 2]
    assert default_thread_counts(3) == [1, 2, 3]
    assert default_thread_counts(8) == [1, 2, 4]


def test_stats_summaries():
    s = summarize(list(range(1, 101)))
    assert s["p50"] == 50.5 and s["min"] == 1 and s["max"] == 100 and s["mean"] == 50.5
    assert 90 <= s["p90"] <= 91 and 99 <= s["p99"] <= 100
    assert summarize([]) == dict.fromkeys(s, 0.0)
    assert fps_from_timestamps([0.0, 0.5, 1.0]) == 2.0 and fps_from_timestamps([1.0]) == 0.0
