"""The shared mechanism for artefacts whose existence means "finished"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from seeinpairs.atomic import (
    FileSet,
    FolderInUseError,
    atomic_dir,
    atomic_path,
    atomic_write_text,
    folder_lock,
    recover_file_sets,
)


def visible(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_a_folder_appears_complete_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        assert not target.exists()
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert visible(target) == ["weights"] and visible(tmp_path) == ["model"]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from seeinpairs.atomic import atomic_dir
        with atomic_dir({str(tmp_path / 'model')!r}) as tmp:
            (tmp / "config.json").write_text("{{")
            os.kill(os.getpid(), signal.SIGKILL)
        """)], timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert len(os.listdir(tmp_path)) == 1 and not (tmp_path / "model").exists()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert os.listdir(tmp_path) == ["model"]


def test_a_set_killed_after_its_commit_is_rolled_forward(tmp_path):
    for name in ("a.csv", "b.csv", "stale.csv"):
        (tmp_path / name).write_text("old")
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from seeinpairs import atomic
        renamed = []
        def replace(src, dst, _replace=os.replace):
            _replace(src, dst)
            renamed.append(dst)
            if len(renamed) == 2:  # the journal, then the first member
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.replace = replace
        with atomic.FileSet({str(tmp_path)!r}, "tables") as files:
            files.path("a.csv").write_text("new")
            files.path("b.csv").write_text("new")
            files.remove("stale.csv")
        """)], timeout=120)
    assert child.returncode == -signal.SIGKILL
    recover_file_sets(tmp_path)
    assert visible(tmp_path) == ["a.csv", "b.csv"]
    assert {(tmp_path / n).read_text() for n in ("a.csv", "b.csv")} == {"new"}
    assert os.listdir(tmp_path) == visible(tmp_path)


def test_a_set_that_fails_before_its_commit_changes_nothing(tmp_path):
    (tmp_path / "a.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with FileSet(tmp_path, "tables") as files:
            files.path("a.csv").write_text("new")
            files.path("b.csv").write_text("new")
            raise RuntimeError("failed while rendering")
    assert os.listdir(tmp_path) == ["a.csv"] and (tmp_path / "a.csv").read_text() == "old"


def test_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(FolderInUseError, match=f"{tmp_path} is in use by process {os.getpid()}"):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):  # released on exit
        pass


@pytest.mark.parametrize("existing", ["a file", "a folder of other things"])
def test_a_tiny_build_never_replaces_what_is_not_a_tiny_model(tmp_path, existing):
    from seeinpairs.backends.tiny import build_tiny_vlm
    from seeinpairs.errors import ConfigError

    target = tmp_path / "out"
    if existing == "a file":
        target.write_text("keep me")
    else:
        (target / "data").mkdir(parents=True)
        (target / "notes.md").write_text("keep me")
    with pytest.raises(ConfigError, match="out: exists and is not a"):
        build_tiny_vlm("qwen2_vl", target)
    assert "keep me" in (target.read_text() if target.is_file() else (target / "notes.md").read_text())


def test_a_half_written_build_is_replaced(tmp_path):
    import json

    from seeinpairs.backends.tiny import build_tiny_vlm, built_tiny_vlm

    target = tmp_path / "tiny"
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "qwen2')  # what a killed build used to leave
    assert not built_tiny_vlm(target)
    build_tiny_vlm("qwen2_vl", target)
    assert built_tiny_vlm(target) and json.loads((target / "config.json").read_text())["model_type"] == "qwen2_vl"
