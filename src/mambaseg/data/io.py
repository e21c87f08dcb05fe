"""Image readers and writers that keep the voxel geometry.

Conventions (the data contract of the whole package):

* **Axis order.** Arrays come back in SimpleITK order: ``(z, y, x)`` for 3-D, ``(y, x)`` for 2-D and
  ``(t, z, y, x)`` for 4-D files (MSD multi-modal NIfTI: ``t`` is the channel). DICOM series are 3-D.
* **Geometry in array axis order.** :class:`ImageMeta` stores ``spacing``, ``origin`` and ``direction`` for the
  *spatial* axes of the returned array, in the same order as the array axes: ``spacing[i]`` is the size of a
  voxel step along array axis ``i``. ITK order (x, y, z) is simply reversed, which is exact, so writing back
  restores the geometry bit for bit. ``origin`` is the world position (LPS, mm, ITK's convention) of voxel 0 with
  its coordinates listed in reversed order ``(z, y, x)``; ``direction`` is the row-major flattened matrix ``D``
  with rows (world axes) and columns (array axes) both reversed, so that
  ``world_rev = origin + D @ (spacing * index)`` holds for an array index ``index``. Use
  :attr:`ImageMeta.itk_spacing`, :attr:`ImageMeta.itk_origin`, :attr:`ImageMeta.itk_direction` for ITK order.
* **2-D natural images** (``.png``, ``.jpg``, ``.bmp``, ``.tif``): greyscale ``(H, W)``; colour images are returned
  **channel-last** ``(H, W, 3)`` (``(H, W, 4)`` with alpha) as every image library does, with
  ``meta.extra["channel_axis"] == -1``. Spacing ``(1.0, 1.0)``, origin ``(0, 0)``, identity direction.
  :class:`mambaseg.data.nnunet_raw.RawDataset` moves colour channels to the front, ``(C, H, W)``.
* **Labels.** ``write_image(..., label=True)`` checks that values are non-negative integers and writes the smallest
  unsigned integer type (uint8, uint16, uint32); bool arrays are always written as uint8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageMeta",
    "ImageReadError",
    "UnsupportedFormatError",
    "as_label_array",
    "geometry_close",
    "image_extension",
    "is_finite_integer_valued",
    "list_dicom_series",
    "read_image",
    "write_image",
]

SITK_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NATURAL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORTED_EXTENSIONS = SITK_EXTENSIONS + NATURAL_EXTENSIONS
LOSSY_EXTENSIONS = (".jpg", ".jpeg")


class ImageReadError(RuntimeError):
    """A file exists but cannot be read (corrupt, truncated, wrong content)."""


class UnsupportedFormatError(ValueError):
    """The file extension is not one this module reads or writes."""


@dataclass
class ImageMeta:
    """Geometry of an image, in the axis order of the array it came with (see the module docstring).

    Attributes:
        spacing: voxel size per spatial array axis, e.g. ``(sz, sy, sx)`` in mm for a ``(z, y, x)`` array.
        origin: world position (LPS, mm) of voxel 0, coordinates reversed to ``(z, y, x)`` order.
        direction: row-major flattened ``n x n`` direction cosine matrix, rows and columns reversed
            relative to ITK so that column ``i`` is the direction of array axis ``i``.
        extra: anything else (``"format"``, ``"channel_axis"`` for colour images, DICOM ``"series_id"``, ...).
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of spatial axes described."""
        return len(self.spacing)

    @property
    def itk_spacing(self) -> tuple[float, ...]:
        """Spacing in ITK order ``(x, y, z)``."""
        return tuple(reversed(self.spacing))

    @property
    def itk_origin(self) -> tuple[float, ...]:
        """Origin in ITK order ``(x, y, z)``."""
        return tuple(reversed(self.origin))

    @property
    def itk_direction(self) -> tuple[float, ...]:
        """Direction matrix in ITK layout, row-major flattened."""
        return _reverse_matrix(self.direction, self.ndim)

    @classmethod
    def identity(cls, ndim: int, **extra: Any) -> ImageMeta:
        """Unit spacing, zero origin, identity direction for ``ndim`` spatial axes."""
        eye = tuple(float(v) for v in np.eye(ndim).ravel())
        return cls((1.0,) * ndim, (0.0,) * ndim, eye, dict(extra))

    @classmethod
    def from_itk(cls, spacing, origin, direction, **extra: Any) -> ImageMeta:
        """Build from ITK-ordered ``GetSpacing()``, ``GetOrigin()``, ``GetDirection()``."""
        n = len(spacing)
        return cls(
            tuple(float(s) for s in reversed(spacing)),
            tuple(float(o) for o in reversed(origin)),
            _reverse_matrix(direction, n),
            dict(extra),
        )

    def subset(self, axes: list[int] | tuple[int, ...]) -> ImageMeta:
        """Geometry restricted to some array axes (e.g. drop the channel axis of a 4-D file: ``axes=(1, 2, 3)``)."""
        d = np.asarray(self.direction, dtype=float).reshape(self.ndim, self.ndim)
        sub = d[np.ix_(axes, axes)]
        return ImageMeta(
            tuple(self.spacing[a] for a in axes),
            tuple(self.origin[a] for a in axes),
            tuple(float(v) for v in sub.ravel()),
            dict(self.extra),
        )


def _reverse_matrix(flat, n: int) -> tuple[float, ...]:
    m = np.asarray(flat, dtype=float).reshape(n, n)
    return tuple(float(v) for v in m[::-1, ::-1].ravel())


def image_extension(path: str | Path) -> str:
    """The lower-case extension of ``path`` as this module understands it (``".nii.gz"`` counts as one)."""
    name = Path(path).name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _import_sitk():
    try:
        import SimpleITK as sitk
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading medical images needs SimpleITK: pip install SimpleITK (or pip install 'mambaseg[data]')"
        ) from err
    return sitk


def _import_pil():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover
        raise ImportError("reading 2-D images needs Pillow: pip install pillow") from err
    return Image


def _import_tifffile():
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


# --------------------------------------------------------------------------------------------------- reading
def read_image(path: str | Path, series_id: str | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file (or a DICOM series directory) with its geometry.

    Args:
        path: ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd`` (SimpleITK), a directory holding one DICOM series,
            or a 2-D ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.tif``/``.tiff``.
        series_id: for a DICOM directory holding several series, the SeriesInstanceUID to read.

    Returns:
        ``(array, meta)``: the array in SimpleITK axis order (``(z, y, x)``, ``(y, x)``, or ``(H, W, 3)`` for
        colour images) with its native dtype, and the geometry in array axis order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsupportedFormatError: the extension is not supported (the message lists the supported ones).
        ImageReadError: the file exists but cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        return _read_dicom_series(path, series_id)
    ext = image_extension(path)
    if ext in SITK_EXTENSIONS:
        return _read_sitk(path)
    if ext in (".tif", ".tiff"):
        return _read_tiff(path)
    if ext in NATURAL_EXTENSIONS:
        return _read_pil(path)
    if ext == ".dcm":
        return _read_sitk(path)
    raise UnsupportedFormatError(
        f"cannot read {path}: unsupported extension {ext!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}, "
        "a single .dcm file, or a directory holding a DICOM series"
    )


def _nifti_expected_size(header: bytes) -> int | None:
    """Bytes a NIfTI-1 file needs (``vox_offset`` + voxel data), from its first 348 bytes; None if not NIfTI-1."""
    import struct

    if len(header) < 348:
        return None
    for endian in "<>":
        if struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = struct.unpack(endian + "f", header[108:112])[0]
            ndim = dims[0]
            if not 1 <= ndim <= 7 or bitpix <= 0:
                return None
            nvox = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]]))
            return int(vox_offset) + nvox * bitpix // 8
    return None


def _check_nifti_complete(path: Path) -> None:
    """ITK reads truncated NIfTI files silently (missing voxels become 0): detect truncation here.

    For ``.nii`` the file size is compared with the header's expectation; for ``.nii.gz`` the gzip trailer's
    ISIZE field, falling back to a full streaming decompression when they disagree (multi-member gzip).
    """
    import gzip
    import zlib

    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                expected = _nifti_expected_size(fh.read(348))
            if expected is None:
                return
            with open(path, "rb") as fh:
                fh.seek(-4, 2)
                isize = int.from_bytes(fh.read(4), "little")
            if isize == expected % 2**32:
                return
            total = 0
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    total += len(chunk)
            if total < expected:
                raise ImageReadError(f"cannot read {path}: truncated file ({total} of {expected} bytes)")
        else:
            with open(path, "rb") as fh:
                expected = _nifti_expected_size(fh.read(348))
            size = path.stat().st_size
            if expected is not None and size < expected:
                raise ImageReadError(f"cannot read {path}: truncated file ({size} of {expected} bytes)")
    except (EOFError, OSError, zlib.error) as err:
        raise ImageReadError(f"cannot read {path}: the file is corrupt or truncated ({err})") from err


def _read_nifti_float(path: Path, sitk) -> tuple[np.ndarray, ImageMeta] | None:
    """Float NIfTI voxels through nibabel, geometry through SimpleITK's header reader.

    ITK's NIfTI reader silently turns NaN and inf voxels into 0 (SimpleITK 2.5, verified), which would hide
    them from every check. For unscaled float files the voxels are therefore taken from nibabel (its ``(x, y, z)``
    array transposed to ``(z, y, x)``, the same as ITK's without reorientation). Returns None to fall back to ITK.
    """
    try:
        import nibabel as nib
    except ImportError:
        return None
    try:
        img = nib.load(str(path))
        if img.header.get_data_dtype().kind != "f":
            return None
        slope, inter = img.header.get_slope_inter()
        if slope not in (None, 1.0) or inter not in (None, 0.0):
            return None
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        arr = np.asarray(img.dataobj.get_unscaled()).T
        if arr.shape != tuple(reversed(reader.GetSize())) or reader.GetNumberOfComponents() != 1:
            return None
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, RuntimeError):
        return None
    meta = ImageMeta.from_itk(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(),
                              format=image_extension(path).lstrip("."), file=str(path))
    return arr, meta


def _read_sitk(path: Path) -> tuple[np.ndarray, ImageMeta]:
    sitk = _import_sitk()
    if image_extension(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
        res = _read_nifti_float(path, sitk)
        if res is not None:
            return res
    try:
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()
        short = next((ln for ln in reason if "rror" in ln or "annot" in ln), reason[-1] if reason else "")
        raise ImageReadError(f"cannot read {path}: the file is corrupt or not a valid image ({short.strip()})") from err
    extra: dict[str, Any] = {"format": image_extension(path).lstrip("."), "file": str(path)}
    if img.GetNumberOfComponentsPerPixel() > 1:
        extra["channel_axis"] = -1
    meta = ImageMeta.from_itk(img.GetSpacing(), img.GetOrigin(), img.GetDirection(), **extra)
    return arr, meta


def list_dicom_series(directory: str | Path) -> dict[str, list[str]]:
    """Map each DICOM SeriesInstanceUID found directly in ``directory`` to its sorted file names."""
    sitk = _import_sitk()
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(directory))
    return {sid: list(reader.GetGDCMSeriesFileNames(str(directory), sid)) for sid in ids}


def _read_dicom_series(directory: Path, series_id: str | None) -> tuple[np.ndarray, ImageMeta]:
    sitk = _import_sitk()
    series = list_dicom_series(directory)
    if not series:
        raise ImageReadError(f"cannot read {directory}: the directory holds no DICOM series")
    if series_id is None:
        if len(series) > 1:
            listing = "; ".join(f"{sid} ({len(files)} files)" for sid, files in series.items())
            raise ImageReadError(
                f"cannot read {directory}: it holds {len(series)} DICOM series, pass series_id= one of: {listing}"
            )
        series_id = next(iter(series))
    if series_id not in series:
        raise ImageReadError(f"cannot read {directory}: no DICOM series {series_id!r}; found {sorted(series)}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[series_id])
    try:
        img = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(f"cannot read DICOM series {series_id} in {directory}: {err}") from err
    arr = sitk.GetArrayFromImage(img)
    meta = ImageMeta.from_itk(
        img.GetSpacing(), img.GetOrigin(), img.GetDirection(),
        format="dicom", file=str(directory), series_id=series_id, num_files=len(series[series_id]),
    )
    return arr, meta


def _natural_meta(arr: np.ndarray, path: Path, fmt: str) -> ImageMeta:
    extra: dict[str, Any] = {"format": fmt, "file": str(path)}
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        extra["channel_axis"] = -1
        return ImageMeta.identity(2, **extra)
    return ImageMeta.identity(arr.ndim, **extra)


def _read_pil(path: Path) -> tuple[np.ndarray, ImageMeta]:
    image_mod = _import_pil()
    try:
        with image_mod.open(path) as im:
            im.load()
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            elif im.mode == "CMYK" or im.mode == "YCbCr":
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            arr = np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read {path}: the file is corrupt or not a valid image ({err})") from err
    return arr, _natural_meta(arr, path, image_extension(path).lstrip("."))


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageMeta]:
    tifffile = _import_tifffile()
    if tifffile is None:
        return _read_pil(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            arr = series.asarray()
    except Exception as err:  # tifffile raises many types (TiffFileError, ValueError, struct.error)
        raise ImageReadError(f"cannot read {path}: the file is corrupt or not a valid TIFF ({err})") from err
    if axes.endswith("S") or (arr.ndim == 3 and arr.shape[-1] in (3, 4) and "Z" not in axes and "Q" not in axes):
        return arr, _natural_meta(arr, path, "tif")
    meta = ImageMeta.identity(arr.ndim, format="tif", file=str(path))
    sidecar = path.with_name(path.name[: -len(image_extension(path))] + ".json")
    if arr.ndim == 3 and sidecar.is_file():  # nnU-Net Tiff3DIO: {"spacing": [x, y, z]}
        import json

        spacing = json.loads(sidecar.read_text()).get("spacing")
        if spacing is not None and len(spacing) == 3:
            meta.spacing = tuple(float(s) for s in reversed(spacing))
    return arr, meta


# --------------------------------------------------------------------------------------------------- writing
def as_label_array(array: np.ndarray, name: str = "label") -> np.ndarray:
    """Validate a label map and cast it to the smallest unsigned integer type.

    Args:
        array: label map of any shape; bool, integer, or float holding integer values.
        name: what to call the array in error messages (e.g. its file name).

    Returns:
        The same values as uint8 (max < 256), uint16 (max < 65536) or uint32.

    Raises:
        ValueError: NaN/inf, non-integer or negative values.
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: label map contains NaN or inf")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name}: label map has non-integer values")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: label map has dtype {arr.dtype}, expected an integer type")
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"{name}: label map has negative values (min {lo})")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return arr.astype(dtype, copy=False)
    raise ValueError(f"{name}: label values too large ({hi})")


def write_image(
    array: np.ndarray, meta: ImageMeta | None, path: str | Path, *, label: bool = False, compress: bool = True
) -> Path:
    """Write ``array`` with the geometry in ``meta``.

    Args:
        array: ``(z, y, x)``/``(y, x)`` (or ``(t, z, y, x)``) in the convention of :func:`read_image`; colour 2-D
            images channel-last ``(H, W, 3|4)``.
        meta: geometry in array axis order; ``None`` writes unit spacing, zero origin, identity direction.
        path: output file; the extension picks the format (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``,
            ``.png``, ``.jpg``, ``.bmp``, ``.tif``). Parent folders are created.
        label: the array is a label map: checked and written as uint8/uint16/uint32 (see :func:`as_label_array`);
            refused for lossy JPEG.
        compress: use compression where the format has it (NIfTI ``.nii.gz`` always is).

    Returns:
        The written path.
    """
    path = Path(path)
    ext = image_extension(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFormatError(
            f"cannot write {path}: unsupported extension {ext!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    arr = np.asarray(array)
    if label:
        if ext in LOSSY_EXTENSIONS:
            raise ValueError(f"cannot write label map {path}: JPEG is lossy, use .png or .nii.gz")
        arr = as_label_array(arr, str(path))
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in SITK_EXTENSIONS:
        _write_sitk(arr, meta, path, compress)
    elif ext in (".tif", ".tiff") and _import_tifffile() is not None:
        _import_tifffile().imwrite(path, arr, compression="zlib" if compress else None)
    else:
        _write_pil(arr, path)
    return path


def _write_sitk(arr: np.ndarray, meta: ImageMeta | None, path: Path, compress: bool) -> None:
    sitk = _import_sitk()
    is_vector = meta is not None and meta.extra.get("channel_axis") == -1 and arr.ndim == meta.ndim + 1
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(arr, isVector=is_vector)
    if meta is not None:
        if meta.ndim != img.GetDimension():
            raise ValueError(
                f"cannot write {path}: meta describes {meta.ndim} spatial axes but the array "
                f"{arr.shape} gives a {img.GetDimension()}-D image"
            )
        img.SetSpacing(meta.itk_spacing)
        img.SetOrigin(meta.itk_origin)
        img.SetDirection(meta.itk_direction)
    try:
        sitk.WriteImage(img, str(path), useCompression=compress or path.name.lower().endswith(".gz"))
    except RuntimeError as err:
        raise OSError(f"cannot write {path}: {err}") from err


def _write_pil(arr: np.ndarray, path: Path) -> None:
    image_mod = _import_pil()
    ext = image_extension(path)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ValueError(f"cannot write {path}: 2-D formats take (H, W) or (H, W, 3|4) arrays, got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)) or arr.min() < 0 or arr.max() > 65535:
            raise ValueError(
                f"cannot write {path}: float data does not fit a {ext} file losslessly; "
                "use .nii.gz/.tif or convert to uint8 first"
            )
        arr = arr.astype(np.uint8 if arr.max() < 256 else np.uint16)
    if arr.dtype.kind in "iu" and arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"cannot write {path}: values outside 0..65535 do not fit {ext}")
        if arr.max() < 256:
            arr = arr.astype(np.uint8)
        elif arr.ndim == 3 or ext in LOSSY_EXTENSIONS:
            raise ValueError(f"cannot write {path}: 16-bit colour or 16-bit JPEG images are not supported")
        else:
            arr = arr.astype(np.uint16)
    try:
        image_mod.fromarray(arr).save(path, **({"quality": 95} if ext in LOSSY_EXTENSIONS else {}))
    except (OSError, ValueError) as err:
        raise OSError(f"cannot write {path}: {err}") from err


def is_finite_integer_valued(arr: np.ndarray) -> bool:
    """True if every value of ``arr`` is a finite integer (any dtype)."""
    if arr.dtype.kind in "iub":
        return True
    return bool(np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr)))


def geometry_close(a: ImageMeta, b: ImageMeta, *, spacing_rtol: float = 1e-5, origin_atol: float = 1e-3,
                   direction_atol: float = 1e-4) -> dict[str, bool]:
    """Compare two geometries; returns ``{"spacing": ok, "origin": ok, "direction": ok}``."""
    if a.ndim != b.ndim:
        return {"spacing": False, "origin": False, "direction": False}
    return {
        "spacing": bool(np.allclose(a.spacing, b.spacing, rtol=spacing_rtol, atol=1e-8)),
        "origin": bool(np.allclose(a.origin, b.origin, rtol=0.0, atol=origin_atol)),
        "direction": bool(np.allclose(a.direction, b.direction, rtol=0.0, atol=direction_atol)),
    }

