"""Tiling plans and accumulation, checked against hand-computed placements and weights."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime.tiling import axis_starts, make_plan, run_plan


@pytest.mark.parametrize("length, starts", [
    (1280, [0, 256, 512, 768, 1024]),  # GoPro width: 5 crops, no overlap
    (720, [0, 232, 464]),  # GoPro height: n=3, step ceil(464/2)=232
    (1000, [0, 248, 496, 744]),  # n=4, step ceil(744/3)=248
    (257, [0, 1]),
    (256, [0]),
    (100, [0]),
])
def test_official_grid_placement(length, starts):
    # Hand-derived from BasicSR's grids(): n = (L-1)//256 + 1, step = ceil((L-256)/(n-1)),
    # starts at multiples of step, the last one moved back to L-256.
    assert axis_starts(length, 256, 0) == starts


def test_blend_placement_keeps_the_overlap():
    # n = ceil((1000-32)/(512-32)) = ceil(2.02) = 3 windows, step ceil((1000-512)/2) = 244
    assert axis_starts(1000, 512, 32) == [0, 244, 488]
    # n = ceil((3840-32)/480) = 8, step ceil(3328/7) = 476
    assert axis_starts(3840, 512, 32) == [0, 476, 952, 1428, 1904, 2380, 2856, 3328]


@pytest.mark.parametrize("length, tile, overlap", [(1000, 512, 32), (3840, 512, 32), (2160, 512, 64),
                                                   (513, 512, 32), (777, 128, 16)])
def test_blend_windows_cover_and_overlap(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def _per_window_constant(plan):
    """A fake network: window k (in call order) returns the constant k + 1."""
    calls = []

    def run(batch):
        out = np.empty_like(batch)
        for i in range(len(batch)):
            out[i] = len(calls) + 1
            calls.append(1)
        return out

    return run


def test_grids_average_by_hand():
    # 3x24x24 image, crop 16: windows at rows/cols 0 and 8, called in order (0,0),(0,8),(8,0),(8,8)
    plan = make_plan(24, 24, "grids", 16, tile=16)
    assert plan.windows == [(0, 0), (0, 8), (8, 0), (8, 8)]
    out = run_plan(np.zeros((3, 24, 24), np.float32), plan, _per_window_constant(plan), batch=3)
    expected = np.zeros((24, 24))
    expected[:8, :8] = 1
    expected[:8, 8:16] = (1 + 2) / 2
    expected[:8, 16:] = 2
    expected[8:16, :8] = (1 + 3) / 2
    expected[8:16, 8:16] = (1 + 2 + 3 + 4) / 4
    expected[8:16, 16:] = (2 + 4) / 2
    expected[16:, :8] = 3
    expected[16:, 8:16] = (3 + 4) / 2
    expected[16:, 16:] = 4
    np.testing.assert_allclose(out, np.broadcast_to(expected, (3, 24, 24)), rtol=0, atol=1e-6)


def test_blend_weights_by_hand():
    # 3x16x48, tile 32, overlap 16: windows at columns 0 and 16; in columns 16..31 window 1 fades
    # out and window 2 in with raised-cosine ramps: 1*(1-r) + 2*r = 1 + r, r = sin^2(pi(i+.5)/32).
    plan = make_plan(16, 48, "blend", 16, tile=32, overlap=16)
    assert plan.windows == [(0, 0), (0, 16)]
    out = run_plan(np.zeros((3, 16, 48), np.float32), plan, _per_window_constant(plan))
    rise = [math.sin(math.pi * (i + 0.5) / 32) ** 2 for i in range(16)]
    expected = np.array([1.0] * 16 + [1 + r for r in rise] + [2.0] * 16)
    np.testing.assert_allclose(out[0, 5], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode, tile", [("whole", None), ("grids", 32), ("blend", 32)])
@pytest.mark.parametrize("shape", [(37, 53), (5, 7), (1, 1), (100, 33)])
def test_identity_network_returns_the_image(mode, tile, shape):
    rng = np.random.default_rng(1)
    image = rng.random((3, *shape), dtype=np.float32)
    seen = []

    def identity(batch):
        seen.append(batch.shape)
        assert batch.shape[2] % 16 == 0 and batch.shape[3] % 16 == 0
        return batch.copy()

    plan = make_plan(*shape, mode, 16, tile=tile, overlap=16)
    out = run_plan(image, plan, identity, batch=2)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-6)
    assert all(s[0] <= 2 for s in seen)


def test_bad_plans_are_refused():
    with pytest.raises(HinetDeployError, match="unknown tiling mode"):
        make_plan(64, 64, "tiles", 16)
    with pytest.raises(HinetDeployError, match="multiple of 16"):
        make_plan(64, 64, "blend", 16, tile=40)
    with pytest.raises(HinetDeployError, match="overlap"):
        make_plan(64, 64, "blend", 16, tile=32, overlap=32)
