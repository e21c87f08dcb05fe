"""Data layer: image I/O keeping geometry, the nnU-Net v2 raw layout, converters, splits and integrity checks.

Conventions are documented in :mod:`mambaseg.data.io` (axis order, geometry, colour images) and
:mod:`mambaseg.data.convert` (how 2-D medical slices and natural images are stored).
"""

from .check import Problem, check_dataset, format_problems
from .convert import (
    convert_acdc_h5,
    convert_folders_2d,
    convert_msd,
    pair_images_and_masks,
)
from .convert_cases import convert_brats2015_deepmedic, convert_case_folders
from .io import (
    SUPPORTED_EXTENSIONS,
    ImageMeta,
    ImageReadError,
    UnsupportedFormatError,
    list_dicom_series,
    read_image,
    write_image,
)
from .nnunet_raw import RawDataset, dataset_folder_name, generate_dataset_json
from .splits import load_splits, make_folds, make_splits, save_splits

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageMeta",
    "ImageReadError",
    "Problem",
    "RawDataset",
    "UnsupportedFormatError",
    "check_dataset",
    "convert_acdc_h5",
    "convert_brats2015_deepmedic",
    "convert_case_folders",
    "convert_folders_2d",
    "convert_msd",
    "dataset_folder_name",
    "format_problems",
    "generate_dataset_json",
    "list_dicom_series",
    "load_splits",
    "make_folds",
    "make_splits",
    "pair_images_and_masks",
    "read_image",
    "save_splits",
    "write_image",
]
