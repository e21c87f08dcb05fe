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


def test_convert_again_is_refused_and_overwrite_replaces_every_case(tmp_path, capsys):
    """A second conversion into the same folder never mixes cases: it is refused, and --overwrite starts afresh.

    The case of a user who converts 5 images after converting 6: before, the 6 old files stayed beside the new
    dataset.json (numTraining 5) and `data check` failed.
    """
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(rng.integers(0, 256, (32, 32), dtype=np.uint8), None, src / "images" / f"im{i}.png")
        write_image(np.eye(32, dtype=np.uint8) * 255, None, src / "masks" / f"im{i}.png")
    argv = ["data", "convert", "--format", "folders2d", str(src), str(tmp_path / "raw"), "--id", "9", "--name", "Toy"]
    folder = tmp_path / "raw" / "Dataset009_Toy"
    assert main(argv) == 0
    (folder / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(argv + ["--limit", "3"]) == 1
    err = capsys.readouterr().err
    assert "already holds a converted dataset" in err and "--overwrite" in err and str(folder) in err
    assert len(list((folder / "imagesTr").iterdir())) == 6  # nothing touched by the refused call
    good = (src / "images" / "im1.png").read_bytes()
    (src / "images" / "im1.png").write_bytes(good[: len(good) // 2])  # truncated: found while writing the cases
    assert main(argv + ["--limit", "3", "--overwrite"]) == 1
    assert "im1.png" in capsys.readouterr().err
    assert len(list((folder / "imagesTr").iterdir())) == 6 and (folder / "dataset.json").is_file()  # kept
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset009_Toy"]  # nothing half-written
    (src / "images" / "im1.png").write_bytes(good)
    assert main(argv + ["--limit", "3", "--overwrite"]) == 0
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"im{i}_0000.png" for i in range(3)]
    assert len(list((folder / "labelsTr").iterdir())) == 3
    assert (folder / "notes.txt").read_text() == "mine"  # only what a conversion writes is replaced
    assert main(["data", "check", str(folder)]) == 0
