"""Readers/writers keep geometry: NIfTI, NRRD, MHA, DICOM series, PNG/JPEG/TIFF, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg.data.io import (
    ImageMeta,
    ImageReadError,
    UnsupportedFormatError,
    as_label_array,
    read_image,
    write_image,
)


def _oblique_meta() -> ImageMeta:
    a, b = 0.3, -0.2  # rotation about z then about x: a genuinely oblique direction
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return ImageMeta.from_itk((0.7, 0.8, 2.5), (10.5, -20.25, 30.0), tuple((rz @ rx).ravel()))


def test_meta_is_in_array_axis_order():
    m = _oblique_meta()
    assert m.spacing == (2.5, 0.8, 0.7) and m.origin == (30.0, -20.25, 10.5)
    assert m.itk_spacing == (0.7, 0.8, 2.5) and m.itk_origin == (10.5, -20.25, 30.0)
    d_itk = np.array(m.itk_direction).reshape(3, 3)
    d_arr = np.array(m.direction).reshape(3, 3)
    np.testing.assert_array_equal(d_arr, d_itk[::-1, ::-1])
    # world position of an array index, computed in both conventions, agrees
    idx = np.array([2, 3, 5])  # (z, y, x)
    w_itk = np.array(m.itk_origin) + d_itk @ (np.array(m.itk_spacing) * idx[::-1])
    w_arr = np.array(m.origin) + d_arr @ (np.array(m.spacing) * idx)
    np.testing.assert_allclose(w_arr[::-1], w_itk)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_values_and_oblique_geometry(tmp_path, ext):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(5, 6, 7)).astype(np.float32)
    meta = _oblique_meta()
    path = write_image(arr, meta, tmp_path / f"img{ext}")
    back, m2 = read_image(path)
    assert back.shape == (5, 6, 7) and back.dtype == np.float32
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(m2.spacing, meta.spacing, rtol=1e-6)
    np.testing.assert_allclose(m2.origin, meta.origin, atol=1e-5)
    np.testing.assert_allclose(m2.direction, meta.direction, atol=1e-6)


def test_label_written_as_small_integer(tmp_path):
    lab = np.zeros((3, 4, 5), dtype=np.float64)
    lab[1, 2, 3] = 3
    _, _m = read_image(write_image(lab, _oblique_meta(), tmp_path / "lab.nii.gz", label=True))
    back, _ = read_image(tmp_path / "lab.nii.gz")
    assert back.dtype == np.uint8 and back[1, 2, 3] == 3
    big = np.full((2, 2, 2), 300)
    assert read_image(write_image(big, None, tmp_path / "big.nrrd", label=True))[0].dtype == np.uint16
    assert read_image(write_image(np.ones((2, 3), bool), None, tmp_path / "b.mha"))[0].dtype == np.uint8
    with pytest.raises(ValueError, match="non-integer"):
        as_label_array(np.array([0.5]))
    with pytest.raises(ValueError, match="lossy"):
        write_image(np.zeros((4, 4), np.uint8), None, tmp_path / "lab.jpg", label=True)


def test_4d_nifti_is_channel_first_with_4d_meta(tmp_path):
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    meta = ImageMeta((1.0, 3.0, 2.0, 1.5), (0.0, 5.0, 6.0, 7.0), tuple(np.eye(4).ravel()))
    back, m = read_image(write_image(arr, meta, tmp_path / "four.nii.gz"))
    np.testing.assert_array_equal(back, arr)
    sub = m.subset((1, 2, 3))
    assert sub.spacing == (3.0, 2.0, 1.5) and sub.origin == (5.0, 6.0, 7.0) and len(sub.direction) == 9


def _write_dicom_series(folder, arr, spacing, origin, series_uid):
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(img.GetDepth()):
        sl = img[:, :, i]
        pos = img.TransformIndexToPhysicalPoint((0, 0, i))
        for tag, value in (("0008|0060", "MR"), ("0020|000e", series_uid), ("0020|000d", "1.2.826.0.1.3680043.2.1"),
                           ("0020|0032", "\\".join(map(str, pos))), ("0020|0013", str(i)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", str(spacing[2])),
                           ("0008|0018", f"{series_uid}.{i + 1}")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{i:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_round_trip_and_multiple_series_error(tmp_path):
    arr = (np.arange(4 * 6 * 5).reshape(4, 6, 5) % 200).astype(np.int16)
    _write_dicom_series(tmp_path, arr, (0.5, 0.6, 2.0), (-10.0, 20.0, 5.0), "1.2.826.0.1.3680043.2.1.111")
    back, meta = read_image(tmp_path)
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(meta.spacing, (2.0, 0.6, 0.5), rtol=1e-4)
    np.testing.assert_allclose(meta.origin, (5.0, 20.0, -10.0), atol=1e-4)
    assert meta.extra["format"] == "dicom"
    _write_dicom_series(tmp_path, arr, (0.5, 0.6, 2.0), (0.0, 0.0, 0.0), "1.2.826.0.1.3680043.2.1.222")
    with pytest.raises(ImageReadError, match=r"2 DICOM series.*111.*222|2 DICOM series.*222.*111"):
        read_image(tmp_path)
    back2, m2 = read_image(tmp_path, series_id="1.2.826.0.1.3680043.2.1.222")
    assert back2.shape == (4, 6, 5) and m2.origin == (0.0, 0.0, 0.0)


def test_2d_formats(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 4, size=(9, 11), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    for ext in (".png", ".bmp", ".tif"):
        back, meta = read_image(write_image(grey, None, tmp_path / f"g{ext}", label=True))
        np.testing.assert_array_equal(back, grey)
        assert meta.spacing == (1.0, 1.0) and "channel_axis" not in meta.extra
        back, meta = read_image(write_image(rgb, None, tmp_path / f"c{ext}"))
        np.testing.assert_array_equal(back, rgb)
        assert back.shape == (9, 11, 3) and meta.extra["channel_axis"] == -1 and meta.ndim == 2
    jpg, _ = read_image(write_image(rgb, None, tmp_path / "c.jpg"))
    assert jpg.shape == (9, 11, 3) and np.abs(jpg.astype(int) - rgb).mean() < 60  # lossy but close
    u16 = (np.arange(99).reshape(9, 11) * 600).astype(np.uint16)
    np.testing.assert_array_equal(read_image(write_image(u16, None, tmp_path / "u16.png"))[0], u16)
    f32 = rng.normal(size=(5, 7, 8)).astype(np.float32)
    np.testing.assert_array_equal(read_image(write_image(f32, None, tmp_path / "stack.tif"))[0], f32)
    with pytest.raises(ValueError, match="losslessly"):
        write_image(f32[0], None, tmp_path / "f.png")


def test_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        read_image(tmp_path / "nope.nii.gz")
    (tmp_path / "x.xyz").write_text("hi")
    with pytest.raises(UnsupportedFormatError, match=r"x\.xyz.*\.nii\.gz.*\.png"):
        read_image(tmp_path / "x.xyz")
    good = write_image(np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32), _oblique_meta(),
                       tmp_path / "good.nii.gz")
    raw = good.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="trunc.nii.gz"):
        read_image(tmp_path / "trunc.nii.gz")
    unzipped = write_image(np.zeros((6, 7, 8), np.float32), None, tmp_path / "u.nii")
    (tmp_path / "trunc.nii").write_bytes(unzipped.read_bytes()[:600])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "trunc.nii")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    (tmp_path / "junk.mha").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="junk.mha"):
        read_image(tmp_path / "junk.mha")


def test_brats_volume_shape_and_geometry(shared_data):
    case = shared_data("brats2015_deepmedic") / "train" / "brats_2013_pat0005_1"
    img, meta = read_image(case / "Flair_subtrMeanDivStd.nii.gz")
    lab, lmeta = read_image(case / "OTMultiClass.nii.gz")
    assert img.shape == lab.shape == (155, 240, 240)  # (z, y, x)
    assert meta.spacing == (1.0, 1.0, 1.0) and meta.origin == lmeta.origin
    assert set(np.unique(as_label_array(lab)).tolist()) <= {0, 1, 2, 3, 4}
