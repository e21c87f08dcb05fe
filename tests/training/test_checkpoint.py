"""Atomic checkpoint writes, clear errors on corrupt files, RNG-state round trips."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from mambaseg.training import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class Boom:
    """Pickling this raises, after torch.save has already written part of the file."""

    def __reduce__(self):
        raise RuntimeError("boom during save")


class Custom:
    """A plain object that weights_only loading refuses."""

    def __init__(self, v=1):
        self.v = v


def _leftovers(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".tmp"))


def test_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 4)}, "iteration": 7, "lrs": [0.1, 0.01], "name": "x"}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", state)
    assert path.is_file()
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7 and loaded["name"] == "x" and loaded["lrs"] == [0.1, 0.01]
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_follow_umask_like_a_plain_file(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    path = save_checkpoint(tmp_path / "ckpt.pt", {"a": 1})
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_exception_mid_save_keeps_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"iteration": 1, "w": torch.ones(1000)})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"iteration": 2, "w": torch.zeros(1000), "z": Boom()})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 1
    assert _leftovers(tmp_path) == []


def test_crash_before_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"iteration": 1})

    def fail(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("cut", ["half", "empty", "garbage"])
def test_truncated_or_corrupt_file_gives_clear_error(tmp_path, cut):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.randn(64, 64), "iteration": 3})
    data = path.read_bytes()
    path.write_bytes({"half": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint" * 10}[cut])
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_weights_only_refusal_is_explained(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"obj": Custom(5)})
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    assert load_checkpoint(path, weights_only=False)["obj"].v == 5


def _draws():
    return (random.random(), random.getrandbits(64), np.random.rand(3).tolist(), np.random.randn(3).tolist(),
            torch.rand(4).tolist(), torch.randint(0, 1000, (3,)).tolist())


def test_rng_round_trip_reproduces_draws():
    np.random.randn(1)  # leave a cached Gaussian in numpy's legacy state
    state = capture_rng_state()
    first = _draws()
    _draws()
    restore_rng_state(state)
    assert _draws() == first


def test_rng_state_survives_checkpoint_with_weights_only(tmp_path):
    state = capture_rng_state()
    first = _draws()
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    _draws()
    restore_rng_state(load_checkpoint(path, weights_only=True)["rng"])
    assert _draws() == first


def test_git_commit_says_dirty_when_tracked_files_changed(tmp_path):
    import shutil
    import subprocess

    from mambaseg.training.trainer import _git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "HOME": str(tmp_path), "PATH": __import__("os").environ["PATH"]}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True,
                          env=env).stdout.strip()
    assert _git_commit(repo / "pkg") == head
    (repo / "pkg" / "new.py").write_text("untracked files do not count\n")
    assert _git_commit(repo / "pkg") == head
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert _git_commit(repo / "pkg") == f"{head} (dirty)"
    (tmp_path / "plain").mkdir()
    outside = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "plain", capture_output=True, env=env)
    if outside.returncode != 0:  # the temporary folder is not inside some other checkout
        assert _git_commit(tmp_path / "plain") is None
