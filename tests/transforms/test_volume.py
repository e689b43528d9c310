"""medlora.transforms.volume and LoadSampled: NIfTI/series → RAS → spacing → window → view."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medlora.config import DataConfig, PreprocessConfig, ViewConfig, WindowConfig
from medlora.transforms.intensity import window_image
from medlora.transforms.pipeline import LoadSampled, build_dataset, build_transforms
from medlora.transforms.views import display_plane
from medlora.transforms.volume import load_volume, oriented_shape, preprocess_volume

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

LINEAR = WindowConfig(mode="manual", center=500.0, width=1001.0)  # 0 → ~0, 500 → 0.5, 1000 → 1

# file axes: i → posterior (3 mm), j → superior (4 mm), k → left (2 mm): nothing like RAS
PERMUTED = np.array([[0.0, 0.0, -2.0, 10.0], [-3.0, 0.0, 0.0, 20.0], [0.0, 4.0, 0.0, -5.0], [0, 0, 0, 1]])
SHAPE = (5, 6, 7)
HOT, WARM = (1, 2, 3), (4, 0, 5)


@pytest.fixture
def permuted_nifti(tmp_path) -> Path:
    data = np.zeros(SHAPE, np.int16)
    data[HOT], data[WARM] = 1000, 500
    path = tmp_path / "permuted.nii.gz"
    nib.save(nib.Nifti1Image(data, PERMUTED), path)
    return path


def _ras_index(voxel: tuple[int, int, int]) -> tuple[int, ...]:
    """Where a file voxel must land in a RAS array covering the same grid (axis-aligned affine)."""
    corners = np.array([[i, j, k, 1] for i in (0, SHAPE[0] - 1) for j in (0, SHAPE[1] - 1) for k in (0, SHAPE[2] - 1)])
    world = corners @ PERMUTED.T
    spacing = np.abs(PERMUTED[:3, :3]).sum(axis=1)
    w = PERMUTED @ np.array([*voxel, 1])
    return tuple(int(round(v)) for v in (w[:3] - world[:, :3].min(axis=0)) / spacing)


def test_nifti_with_a_permuted_affine_is_reoriented_to_ras(permuted_nifti) -> None:
    vol = load_volume(str(permuted_nifti), "nifti")
    assert nib.aff2axcodes(vol.affine.numpy()) == ("P", "S", "L")
    out = preprocess_volume(vol, PreprocessConfig(window=LINEAR))
    assert out.shape == (1, 7, 5, 6) == (1, *oriented_shape(SHAPE, PERMUTED))
    assert np.unravel_index(out[0].argmax(), out[0].shape) == _ras_index(HOT) == (3, 3, 2)
    assert out[0][_ras_index(WARM)] == pytest.approx(0.5, abs=1e-3)
    assert np.count_nonzero(out > 0.25) == 2


def test_spacing_resamples_to_the_predicted_shape(permuted_nifti) -> None:
    vol = load_volume(permuted_nifti, "nifti")
    out = preprocess_volume(vol, PreprocessConfig(window=LINEAR, spacing=[1.0, 1.5, 2.0]))
    assert out.shape[1:] == oriented_shape(SHAPE, PERMUTED, [1.0, 1.5, 2.0]) == (13, 9, 11)


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "example_mr_sm.nii.gz"])
def test_real_totalsegmentator_volumes_land_in_ras(name, shared_data) -> None:
    path = shared_data("nifti", "totalseg", name)
    img = nib.load(path)
    data = img.get_fdata(dtype=np.float32)
    window = WindowConfig(mode="preset", preset="abdomen")
    out = preprocess_volume(load_volume(path, "nifti"), PreprocessConfig(window=window))
    flips = tuple(i for i, code in enumerate(nib.aff2axcodes(img.affine)) if code in "LPI")
    expected = window_image(np.flip(data, flips)[np.newaxis], {}, window)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.shape[1:] == oriented_shape(data.shape, img.affine)


def test_series_slice_view_equals_the_2d_path_for_the_same_slice(shared_data) -> None:
    files = sorted(shared_data("dicom", "ct_3slice").glob("*.dcm"))
    pre = PreprocessConfig(window=WindowConfig(mode="dicom"), view=ViewConfig(kind="slice"))
    load = LoadSampled(keys="image", preprocess=pre)
    view = load({"image": [str(f) for f in files[::-1]], "kind": "series", "view_index": 0})["image"]
    image = load({"image": str(files[1]), "kind": "dicom2d"})["image"]  # 02.dcm is the middle slice
    assert view.shape == image.shape == (1, 512, 512)
    np.testing.assert_allclose(view.numpy(), np.asarray(image), atol=1e-6)


def test_views_of_one_volume_decode_it_once(permuted_nifti, monkeypatch) -> None:
    from medlora.transforms import volume

    calls = []
    real = volume.load_volume
    monkeypatch.setattr(volume, "load_volume", lambda *a: calls.append(a) or real(*a))
    pre = PreprocessConfig(window=LINEAR, view=ViewConfig(kind="slab", slab=3))
    load = LoadSampled(keys="image", preprocess=pre)
    views = [load({"image": str(permuted_nifti), "kind": "nifti", "view_index": i})["image"] for i in range(3)]
    assert len(calls) == 1 and all(v.shape == (1, 5, 7) for v in views)
    full = preprocess_volume(real(str(permuted_nifti), "nifti"), pre)
    for i, z in enumerate((2, 3, 4)):
        np.testing.assert_array_equal(views[i].numpy(), display_plane(full[..., z]))
    clone = pickle.loads(pickle.dumps(load))  # DataLoader workers receive a copy without the cache
    assert torch.equal(clone({"image": str(permuted_nifti), "kind": "nifti", "view_index": 1})["image"], views[1])


def test_disk_cache_keeps_the_views_of_one_volume_apart(permuted_nifti, tmp_path) -> None:
    pre = PreprocessConfig(window=LINEAR, view=ViewConfig(kind="slab", slab=3), augment=False)
    transform = build_transforms(pre, 8, [0.5], [0.5])
    items = [{"image": str(permuted_nifti), "kind": "nifti", "view_index": i, "label": 0} for i in range(3)]
    ds = build_dataset(items, transform, DataConfig(root=tmp_path, cache="disk", cache_dir=tmp_path / "c"), "fp")
    images = [ds[i]["image"] for i in range(3)]
    assert all(im.shape == (1, 8, 8) for im in images)
    assert not torch.equal(images[0], images[1]) and len(list((tmp_path / "c" / "fp").glob("*.pt"))) == 3


def test_a_volume_sample_is_resampled_to_depth_by_size_squared_with_the_models_channels(permuted_nifti) -> None:
    pre = PreprocessConfig(window=LINEAR, view=ViewConfig(kind="volume", depth=4, axis=2), augment=False)
    image = build_transforms(pre, 8, [0.5] * 3, [0.5] * 3)({"image": str(permuted_nifti), "kind": "nifti",
                                                             "view_index": 0})["image"]
    assert tuple(image.shape) == (3, 4, 8, 8)  # (C, depth, size, size), grey repeated into 3 channels
    torch.testing.assert_close(image[0], image[2])


def test_volume_view_refuses_a_data_set_holding_2d_images_naming_them() -> None:
    import pandas as pd

    from medlora.errors import InputError
    from medlora.transforms.samples import expand_views

    manifest = pd.DataFrame({"sample_id": ["a", "b"], "kind": ["nifti", "dicom2d"], "path": ["v.nii.gz", "cxr/1.dcm"],
                             "source": ["v.nii.gz", "cxr/1.dcm"], "shape": ["4x4x4", ""], "affine": [str(np.eye(4).tolist()), ""]})
    with pytest.raises(InputError, match=r"1 of 2 samples are 2D images .*cxr/1\.dcm"):
        expand_views(manifest, PreprocessConfig(view=ViewConfig(kind="volume")))
