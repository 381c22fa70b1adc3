"""Artefacts that survive kill -9 and concurrent runs.

The rule: a file or folder whose existence means "finished" (a built model, a
generated manifest, a table, a cache entry) only ever appears complete. Work is
written under a temporary name next to its target and renamed into place, and a
rename within one file system is atomic, so a killed process leaves the old
artefact or none, plus a temporary that the next writer removes.

* :func:`atomic_path` - one file: write to the yielded temporary path, published on success.
* :func:`atomic_dir` - one folder: build into the yielded temporary folder, swapped in on success.
* :class:`FileSet` - several files in one folder that belong together (the tables of a run):
  staged as temporaries, then committed by one atomic journal write, so a kill before the
  commit leaves the old set and a kill during it is rolled forward by :func:`recover_file_sets`.
* :func:`folder_lock` - one writing process per output folder (``flock``; released by the
  kernel when its holder dies, so a killed run never leaves a stale lock).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import SeeInPairsError

#: name part that marks temporaries; ``.<target>.partial-<pid>-<random>``
_PARTIAL = ".partial-"
_JOURNAL_SUFFIX = ".commit.json"


class FolderInUseError(SeeInPairsError):
    """Another live process holds the lock of an output folder."""


# ----- temporaries ------------------------------------------------------------------------------
def _partial_prefix(target: Path) -> str:
    return f".{target.name}{_PARTIAL}{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_pid(name: str) -> int | None:
    """The pid in a temporary's name (``.<target>.partial-<pid>-<random>``), or None."""
    _, _, rest = name.rpartition(_PARTIAL)
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_partials(target: Path) -> None:
    """Delete temporaries of ``target`` left by processes that no longer run (killed writers)."""
    parent = target.parent
    if not parent.is_dir():
        return
    for leftover in parent.glob(f".{target.name}{_PARTIAL}*"):
        pid = _owner_pid(leftover.name)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a rename is only on disk once its folder is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            _fsync_file(path)


# ----- one file ---------------------------------------------------------------------------------
@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    The temporary keeps ``target``'s suffix, so writers that choose a format by
    suffix (``np.save``, ``to_parquet``, PIL) behave as for ``target``. On an
    exception the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # no sweep for a killed writer's temporary here: caches write thousands of files into one
    # folder, and a leftover file is small and hidden (folders and file sets do sweep)
    fd, name = tempfile.mkstemp(prefix=_partial_prefix(target), suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` so that readers see the old content or the new, never part."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text."""
    return atomic_write_bytes(target, text.encode(encoding))


# ----- one folder -------------------------------------------------------------------------------
def replace_dir(source: Path, target: Path) -> None:
    """Put the complete folder ``source`` at ``target``, replacing what is there.

    A folder cannot be renamed over a non-empty one, so the old one is first
    renamed aside; a kill between the two renames leaves no ``target`` (the
    artefact counts as not built), never a mixture of old and new files.
    """
    for _ in range(5):  # another writer may publish between our two renames; then move it aside again
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=target.parent))
            try:
                os.replace(target, aside / "old")
            except FileNotFoundError:
                pass
        else:
            aside = None
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        fsync_dir(target.parent)
        return
    raise OSError(errno.EEXIST, f"{target}: kept being replaced by another process")


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it becomes ``target``.

    Everything inside is fsync'ed before the swap, so after a crash ``target`` is
    either absent, the old folder, or the new one complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    tmp = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----- a set of files ---------------------------------------------------------------------------
class FileSet:
    """Files in one folder that are published together: all new ones, or all old ones.

    Use as a context manager: :meth:`path` gives a temporary to write each
    member to, :meth:`remove` names old members the new set no longer has.
    On exit the temporaries are fsync'ed, a journal listing every rename and
    removal is written atomically (the commit point), the renames are applied
    and the journal deleted. A kill before the commit leaves the old set
    untouched; a kill after it is finished by :func:`recover_file_sets`, which
    every new :class:`FileSet` (and every evaluation run) calls first.
    """

    def __init__(self, folder: str | Path, name: str) -> None:
        self.folder = Path(folder)
        self.name = name
        self._staged: dict[str, Path] = {}
        self._removed: set[str] = set()

    def __enter__(self) -> "FileSet":
        self.folder.mkdir(parents=True, exist_ok=True)
        recover_file_sets(self.folder)
        return self

    def path(self, member: str) -> Path:
        """The temporary to write member ``member`` (a file name inside the folder) to."""
        if Path(member).name != member:
            raise ValueError(f"a file set member is a plain file name, got '{member}'")
        if member not in self._staged:
            target = self.folder / member
            remove_stale_partials(target)  # staged by a writer killed before its commit
            fd, name = tempfile.mkstemp(prefix=_partial_prefix(target), suffix=target.suffix, dir=self.folder)
            os.close(fd)
            self._staged[member] = Path(name)
        self._removed.discard(member)
        return self._staged[member]

    def remove(self, member: str) -> None:
        """Delete ``member`` when the set is committed (it is not part of the new set)."""
        if member not in self._staged:
            self._removed.add(member)

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            for tmp in self._staged.values():
                tmp.unlink(missing_ok=True)
            return
        for tmp in self._staged.values():
            _fsync_file(tmp)
        journal = {"renames": {member: tmp.name for member, tmp in self._staged.items()},
                   "removals": sorted(self._removed)}
        atomic_write_text(self.folder / f".{self.name}{_JOURNAL_SUFFIX}", json.dumps(journal, indent=1))
        recover_file_sets(self.folder)


def recover_file_sets(folder: str | Path) -> None:
    """Finish every committed :class:`FileSet` in ``folder`` (roll forward), then drop its journal."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for journal_path in sorted(folder.glob(f".*{_JOURNAL_SUFFIX}")):
        try:
            journal = json.loads(journal_path.read_text(encoding="utf-8"))
            renames, removals = dict(journal["renames"]), list(journal["removals"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours; leave it alone
        for member, tmp_name in renames.items():
            tmp = folder / Path(tmp_name).name
            try:
                os.replace(tmp, folder / Path(member).name)
            except FileNotFoundError:
                pass  # renamed already (by an earlier recovery or a concurrent one)
        for member in removals:
            (folder / Path(member).name).unlink(missing_ok=True)
        fsync_dir(folder)
        journal_path.unlink(missing_ok=True)
        fsync_dir(folder)


# ----- one writer per folder --------------------------------------------------------------------
@contextmanager
def folder_lock(folder: str | Path, name: str = ".seeinpairs.lock", wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the block, or fail at once naming the holder.

    ``wait=True`` blocks until the holder is done instead (for work the second
    process can then skip, such as generating the same data set). ``flock`` is released by the kernel when its process ends, however it ends,
    so the lock of a killed run is simply taken over. The lock file stays (deleting
    it would let two processes lock two different files of the same name).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise FolderInUseError(
                f"{folder} is in use by process {holder} (another run writes its results there); "
                f"wait for it to finish or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the flock
