"""medlora.transforms.views: positions, counts and shapes of each view kind; 2.5D and MIP semantics."""

from __future__ import annotations

import numpy as np
import pytest

from medlora.config import ViewConfig
from medlora.transforms.views import display_plane, extract_view, view_count, view_positions

VOLUME = np.random.default_rng(0).normal(size=(1, 6, 5, 9)).astype(np.float32)  # (C, X, Y, Z)

# (view, n slices, expected positions)
POSITION_CASES = [
    (ViewConfig(kind="slice"), 9, [4]),
    (ViewConfig(kind="slice"), 8, [4]),
    (ViewConfig(kind="every_k", k=4), 9, [0, 4, 8]),
    (ViewConfig(kind="every_k", k=4), 11, [1, 5, 9]),
    (ViewConfig(kind="every_k", k=1), 3, [0, 1, 2]),
    (ViewConfig(kind="slab", slab=5), 9, [2, 3, 4, 5, 6]),
    (ViewConfig(kind="slab", slab=4), 9, [2, 3, 4, 5]),
    (ViewConfig(kind="slab", slab=5), 3, [0, 1, 2]),
    (ViewConfig(kind="2.5d", slab=1), 9, [4]),
    (ViewConfig(kind="2.5d", slab=3), 9, [3, 4, 5]),
    (ViewConfig(kind="mip"), 9, [4]),
]


@pytest.mark.parametrize(("view", "n", "expected"), POSITION_CASES)
def test_view_positions_and_counts(view, n, expected) -> None:
    assert view_positions(n, view) == expected
    assert view_count(n, view) == len(expected)


# (view, expected shape (C, H, W) of every sample, axis 2 → the (X, Y) plane displayed as (Y, X))
SHAPE_CASES = [
    (ViewConfig(kind="slice"), (1, 5, 6)),
    (ViewConfig(kind="every_k", k=3), (1, 5, 6)),
    (ViewConfig(kind="slab", slab=3), (1, 5, 6)),
    (ViewConfig(kind="2.5d", slab=3), (3, 5, 6)),
    (ViewConfig(kind="mip"), (1, 5, 6)),
    (ViewConfig(kind="slice", axis=0), (1, 9, 5)),
    (ViewConfig(kind="2.5d", axis=1, slab=1), (3, 9, 6)),
]


@pytest.mark.parametrize(("view", "shape"), SHAPE_CASES)
def test_every_sample_of_a_view_has_its_shape(view, shape) -> None:
    n = VOLUME.shape[1 + view.axis]
    samples = [extract_view(VOLUME, view, i) for i in range(view_count(n, view))]
    assert samples and all(s.shape == shape and s.dtype == np.float32 for s in samples)


def test_slice_views_are_the_displayed_planes_at_their_positions() -> None:
    view = ViewConfig(kind="every_k", k=3)
    for i, z in enumerate(view_positions(9, view)):
        np.testing.assert_array_equal(extract_view(VOLUME, view, i), display_plane(VOLUME[..., z]))


def test_display_plane_flips_both_axes_and_transposes() -> None:
    plane = np.arange(6, dtype=np.float32).reshape(1, 2, 3)  # (C, X=2, Y=3)
    out = display_plane(plane)
    assert out.shape == (1, 3, 2)
    for r in range(3):
        for c in range(2):
            assert out[0, r, c] == plane[0, 1 - c, 2 - r]


def test_25d_channels_are_three_adjacent_slices_clamped_at_the_ends() -> None:
    view = ViewConfig(kind="2.5d", slab=9)
    for i, z in enumerate(view_positions(9, view)):
        out = extract_view(VOLUME, view, i)
        for channel, neighbour in enumerate((z - 1, z, z + 1)):
            neighbour = min(max(neighbour, 0), 8)
            np.testing.assert_array_equal(out[channel], display_plane(VOLUME[..., neighbour])[0])


def test_mip_is_the_maximum_along_the_axis() -> None:
    for axis in (0, 1, 2):
        out = extract_view(VOLUME, ViewConfig(kind="mip", axis=axis), 0)
        np.testing.assert_array_equal(out, display_plane(VOLUME.max(axis=axis + 1)))


def test_index_past_the_last_position_is_clamped_and_bad_inputs_raise() -> None:
    view = ViewConfig(kind="slab", slab=3)
    np.testing.assert_array_equal(extract_view(VOLUME, view, 7), extract_view(VOLUME, view, 2))
    with pytest.raises(ValueError, match=r"\(C, X, Y, Z\)"):
        extract_view(VOLUME[0], view, 0)
    with pytest.raises(ValueError, match="single-channel"):
        extract_view(np.concatenate([VOLUME, VOLUME]), ViewConfig(kind="2.5d"), 0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_volume_view_is_every_slice_view_in_order(axis) -> None:
    """``kind: volume`` is one sample: the ``slab`` views of every slice along ``axis``, stacked in slice order."""
    n = VOLUME.shape[axis + 1]
    whole = extract_view(VOLUME, ViewConfig(kind="volume", axis=axis), 0)
    slices = [extract_view(VOLUME, ViewConfig(kind="every_k", k=1, axis=axis), i) for i in range(n)]
    assert view_positions(n, ViewConfig(kind="volume")) == [n // 2] and whole.shape == (1, n, *slices[0].shape[1:])
    np.testing.assert_array_equal(whole, np.stack([s[0] for s in slices])[None])


def test_volume_view_and_attention_pooling_are_refused_together() -> None:
    with pytest.raises(ValueError, match="no slices for aggregate: attention"):
        ViewConfig(kind="volume", aggregate="attention")
