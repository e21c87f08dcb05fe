"""``mambaseg data convert`` and ``mambaseg data check``."""

from __future__ import annotations

import numpy as np
from test_nnunet_raw import make_3d_dataset

from mambaseg.cli.main import main
from mambaseg.data.io import write_image


def test_check_exit_codes(tmp_path, capsys):
    folder = make_3d_dataset(tmp_path)
    assert main(["data", "check", str(folder)]) == 0
    assert "no problems found" in capsys.readouterr().out
    write_image(np.full((4, 5, 6), 9, np.uint8), None, folder / "labelsTr" / "case_000.nii.gz", label=True)
    assert main(["data", "check", str(folder), "--lenient-geometry"]) == 1
    out = capsys.readouterr().out
    assert "label_values" in out and "case_000.nii.gz" in out


def test_convert_folders2d_then_check(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(3):
        write_image(np.full((6, 7, 3), 40 * i, np.uint8), None, src / "images" / f"im{i}.png")
        write_image(np.eye(6, 7, dtype=np.uint8) * 255, None, src / "masks" / f"im{i}.png")
    assert main(["data", "convert", "--format", "folders2d", str(src), str(tmp_path / "raw")]) == 2
    assert main(["data", "convert", "--format", "folders2d", str(src), str(tmp_path / "raw"), "--id", "9",
                 "--name", "Toy"]) == 0
    assert main(["data", "check", str(tmp_path / "raw" / "Dataset009_Toy")]) == 0
    assert main(["data", "convert", "--format", "msd", str(src), str(tmp_path / "raw")]) == 1
    assert "not an MSD task folder" in capsys.readouterr().err
