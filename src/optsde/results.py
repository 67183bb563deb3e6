"""Where runs write: a results directory that never costs the user a file.

The rules (every one checked before any work starts):

- A run writes into its *work area*, a hidden sibling ``.NAME.optsde-work`` of the
  results directory ``NAME``; its checkpoints live there too.  Only a finished run
  is moved into place, in one rename, so a results directory is whole or absent.
- optsde replaces a directory only if it wrote it: a results directory carries a
  marker file (:data:`MARKER`) listing the files optsde put there, and replacing it
  needs ``--overwrite``.  A non-empty directory without the marker, or with files
  the marker does not list, is refused; so are the current directory and its parents.
- Bad input found after the start (or a crash before anything was recorded) removes
  the work area and any parent directory the run created; an interrupted run keeps
  its work area, so that ``--resume`` continues from its checkpoints.
- Directories and files are created with the user's umask (no private temp dirs).
- Single output files (``--json``, ``--write``) are never written over.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from optsde import __version__
from optsde.errors import OptsdeError

MARKER = ".optsde-run"
"""The file that makes a directory an optsde result: JSON with the files optsde wrote there."""

WORK_SUFFIX = ".optsde-work"
OLD_SUFFIX = ".optsde-old"
CHECKPOINTS = ".checkpoints"


class OutputError(OptsdeError):
    """An output path optsde cannot or must not write to."""


def written_files(directory: Path) -> list[str] | None:
    """The files an optsde result directory says optsde wrote, or None if it is not one."""
    try:
        record = json.loads((directory / MARKER).read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("written_by") != "optsde" or not isinstance(files, list):
        return None
    return [str(name) for name in files]


def _all_files(directory: Path) -> list[str]:
    """Every file and link under ``directory``, relative, as ``a/b.png`` (directories are not listed)."""
    found = []
    for root, dirs, files in os.walk(directory):
        base = Path(root).relative_to(directory)
        # A link to a directory is listed as a file: it is not followed and must be accounted for.
        links = [d for d in dirs if (Path(root) / d).is_symlink()]
        found += [str(base / name) for name in files + links]
    return sorted(found)


def _foreign_files(directory: Path) -> list[str]:
    """Files in ``directory`` that optsde did not write (all of them if it is not an optsde result)."""
    ours = written_files(directory)
    present = _all_files(directory)
    if ours is None:
        return present
    return [name for name in present if name not in {*ours, MARKER}]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and not path.is_symlink():
        path = path.parent
    return path


def _check_parent(path: Path, flag: str) -> None:
    """The directory ``path`` would be created in exists (or can be made) and takes new entries.

    Permission bits do not say it (root may write anywhere by them, yet not in /proc), so the
    nearest existing ancestor is probed by making and removing an empty directory in it.
    """
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {path}: {ancestor} is a file, not a directory; choose another path")
    probe = ancestor / f".{path.name}.optsde-probe"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(
            f"{flag} {path}: cannot create anything in {ancestor} ({exc.strerror}); choose another path"
        ) from None


def _make_dirs(path: Path, flag: str, shown: Path) -> list[Path]:
    """``mkdir -p path`` that reports the directories it created, newest first, or one line."""
    created: list[Path] = []
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.insert(0, directory)
    except OSError as exc:
        _remove_empty(created)
        where = Path(exc.filename).parent if exc.filename else path.parent
        raise OutputError(
            f"{flag} {shown}: cannot create a directory in {where} ({exc.strerror}); choose another path"
        ) from None
    return created


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def check_collection_dir(path: Path, flag: str) -> Path:
    """A directory that collects many runs (a sweep): it may exist and hold other files, since
    optsde only adds its own run directories to it, but it must be, or become, a directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: a file with that name exists; choose another directory")
    if not path.exists():
        _check_parent(path.absolute(), flag)
    return path


def check_new_file(path: Path, flag: str) -> Path:
    """Refuse an output file that exists or cannot be created, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: that is a directory; give a file name such as results.json")
    if path.exists() or path.is_symlink():
        raise OutputError(
            f"{flag} {path}: the file exists and optsde does not write over files; "
            "give a new name or move the old file"
        )
    _check_parent(path.absolute(), flag)
    return path


def write_new_file(path: Path, text: str, flag: str) -> Path:
    """Write ``text`` to ``path`` (checked by :func:`check_new_file`), creating its parents."""
    path = Path(path)
    _make_dirs(path.absolute().parent, flag, path)
    try:
        with open(path, "x") as handle:
            handle.write(text)
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot write it ({exc.strerror}); choose another path") from None
    return path


@dataclass
class RunDirectory:
    """A results directory being made: ``work`` now, ``out`` once :meth:`commit` ran."""

    out: Path
    work: Path
    created: list[Path] = field(default_factory=list)

    @classmethod
    def open(cls, out: Path, *, overwrite: bool = False, resume: bool = False) -> RunDirectory:
        """Check ``out`` (flag ``--out``) and prepare the work area; one-line error if ``out`` is unfit.

        ``resume`` keeps an earlier work area (and needs one); otherwise a stale one is cleared.
        """
        shown = Path(out)
        out = Path(os.path.abspath(out))
        here = Path.cwd().resolve()
        if out.resolve() == here or out.resolve() in here.parents:
            raise OutputError(
                f"--out {shown}: that is the current directory or holds it; "
                "give a new directory such as runs/NAME"
            )
        if out.is_symlink():
            raise OutputError(f"--out {shown}: is a symbolic link; give the directory itself")
        if out.exists():
            if not out.is_dir():
                raise OutputError(f"--out {shown}: a file with that name exists; choose another directory")
            if not os.access(out, os.R_OK | os.X_OK):
                raise OutputError(f"--out {shown}: cannot be read; choose another directory")
            foreign = _foreign_files(out)
            if foreign:
                listed = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
                raise OutputError(
                    f"--out {shown}: holds files optsde did not write ({listed}); "
                    "optsde never deletes them: choose a new or empty directory"
                )
            if written_files(out) is not None and not overwrite:
                raise OutputError(
                    f"--out {shown}: holds an earlier optsde result; add --overwrite "
                    "to replace it, or choose another directory"
                )
        _check_parent(out, "--out")
        work = out.with_name(f".{out.name}{WORK_SUFFIX}")
        if resume:
            if not (work / MARKER).is_file():
                raise OutputError(
                    f"--resume: there is no interrupted run to continue ({work} does not "
                    "exist); run without --resume to start afresh"
                )
            return cls(out, work)
        if work.exists() or work.is_symlink():
            if not (work / MARKER).is_file() or work.is_symlink():
                raise OutputError(f"--out {shown}: {work} exists and is not optsde's; move it away")
            shutil.rmtree(work)
        created = _make_dirs(work, "--out", shown)
        run = cls(out, work, created[1:])
        run._write_marker([])
        return run

    def checkpoints(self, name: str = "") -> Path:
        """The directory for the checkpoints of ``name`` (one experiment of a run)."""
        return self.work / CHECKPOINTS / name

    def _write_marker(self, files: list[str]) -> None:
        record = {"written_by": "optsde", "version": __version__, "files": files}
        (self.work / MARKER).write_text(json.dumps(record, indent=2) + "\n")

    def abandon(self) -> None:
        """Remove everything this run created (a refused or failed start)."""
        shutil.rmtree(self.work, ignore_errors=True)
        _remove_empty(self.created)

    def commit(self) -> Path:
        """Drop the checkpoints, list the files in the marker, and swap the work area into place."""
        shutil.rmtree(self.checkpoints(), ignore_errors=True)
        self._write_marker([name for name in _all_files(self.work) if name != MARKER])
        old = self.out.with_name(f".{self.out.name}{OLD_SUFFIX}")
        if self.out.exists():
            foreign = _foreign_files(self.out)
            if foreign:  # something was put there while the run was going on
                raise OutputError(
                    f"--out {self.out}: files appeared in it during the run ({foreign[0]}); "
                    f"the new results are in {self.work}"
                )
            if written_files(self.out) is None:
                self.out.rmdir()  # empty, and not ours: nothing is lost
            else:
                self._clear_old(old)
                os.replace(self.out, old)
        os.replace(self.work, self.out)
        self._clear_old(old)
        return self.out

    def _clear_old(self, old: Path) -> None:
        """Remove the replaced result (or one left by a run killed mid-swap), if it is optsde's."""
        if old.exists() or old.is_symlink():
            if written_files(old) is None or _foreign_files(old):
                raise OutputError(f"--out {self.out}: {old} is in the way and is not optsde's; move it away")
            shutil.rmtree(old)
