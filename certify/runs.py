"""Files another process may read: atomic writes, and run directories that say which files are whose.

* `atomic_write(path, data)` / `atomic_save(path, writer)`: the bytes go to a temporary file with a unique name in
  the target's folder (`.NAME.XXXXXXXX.partial`, from `tempfile.mkstemp`), are flushed and fsynced, then renamed
  over the target (`os.replace`, atomic on POSIX and Windows). A reader sees the old file or the new one, never
  half of one; concurrent writers of the same path each succeed and the last rename wins; the temporary file is
  removed on any exception (Ctrl-C included).
* `RunDirectory`: the folder of one run of a command (`certify demo --out DIR`, `certify evaluate --out DIR`,
  `certify check --out DIR`) carries `manifest.json` (`MANIFEST`): the run id (uuid4), the command (argv), the
  certify / torch / python versions, start time, end time (only once finished), status (`running`, `finished`,
  `interrupted`) and every file the run produced with its sha256. The manifest is rewritten atomically after each
  file, so a run killed at any moment leaves a manifest listing exactly the files it finished.
  A rerun into a used folder resumes (same command, unfinished: the files it finished are kept and listed as
  reused), does nothing (same command, finished: says so on stderr), or refuses with a UsageError (another
  command, or files without a manifest) unless `overwrite=True`, which deletes the files the old manifest lists
  and starts afresh.
* `run_files(path)`: the files of the run in `path` whose hashes match its manifest, for a report built from one
  run only (InvalidInputError naming a listed file that is missing or changed); `report_inputs(path)`: the same
  check, file by file, as a look-up by name.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

from certify.errors import InvalidInputError, UsageError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
OVERWRITE_FLAG = "--overwrite"  # not part of a command's identity: a rerun without it is the same command
_CHUNK = 1 << 20
_UMASK = os.umask(0o022)  # read once at import (os.umask sets it too; it is put back on the next line)
os.umask(_UMASK)


def _parent_of(path: Path) -> Path:
    """The folder `path` is written into; UsageError when it is missing, or when `path` exists and is a symlink or
    not a regular file (folder, device node, FIFO, socket): such a target is never replaced nor written through."""
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {parent} does not exist")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return parent
    if stat.S_ISLNK(mode):
        raise UsageError(f"cannot write {path}: it is a symbolic link (to {os.readlink(path)}); write to a plain "
                         "file path")
    if stat.S_ISDIR(mode):
        raise UsageError(f"cannot write {path}: it is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"cannot write {path}: it is a {_kind(mode)}, not a regular file")
    return parent


def _kind(mode: int) -> str:
    """What a non-regular, non-folder file is, in words, from its `st_mode`."""
    kinds = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"))
    return next((name for test, name in kinds if test(mode)), "special file")


def atomic_save(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], Any]) -> Path:
    """Write `path` atomically: `writer(f)` writes the content into `f`, an open binary file (a temporary file with
    a unique name in the same folder), which is then fsynced and renamed over `path`.
    E.g. `atomic_save(p, lambda f: torch.save(state, f))`, `atomic_save(p, lambda f: fig.savefig(f, format="png"))`.
    Raises UsageError when the parent folder is missing or `path` exists and is not a regular file (a folder, a
    symlink, a device node, a FIFO, a socket: never replaced nor written through); the temporary file is removed when
    `writer` (or anything else) raises. Returns `path`."""
    path = Path(path)
    parent = _parent_of(path)
    fd, temp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp creates 0600; a written file gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` (str: UTF-8) to `path` atomically (`atomic_save`). Raises UsageError for a missing parent folder
    or a `path` that exists and is not a regular file (folder, symlink, device node, FIFO, socket)."""
    payload = _payload(data)
    return atomic_save(path, lambda f: f.write(payload))


def _payload(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the run in `folder`, or None when it has none. InvalidInputError when `manifest.json` is
    not a manifest (unreadable JSON, or without run id, command, status and files)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{path} is not a readable run manifest: {exc}") from exc
    if not (isinstance(manifest, dict) and {"run_id", "command", "status", "files"} <= set(manifest)
            and isinstance(manifest["files"], dict) and isinstance(manifest["command"], list)):
        raise InvalidInputError(f"{path} is not a run manifest (it needs run_id, command, status and files)")
    return manifest


def _inside(folder: Path, name: str) -> Path:
    """folder / name for a manifest entry, refusing names that leave the folder (absolute, '..')."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise InvalidInputError(f"{folder / MANIFEST} lists {name!r}, which is not a file inside the run folder")
    return folder / relative


def _checked(folder: Path, manifest: dict[str, Any], name: str) -> Path:
    """folder / name, which the manifest lists, after checking its content against the recorded sha256."""
    path = _inside(folder, name)
    if not path.is_file():
        raise InvalidInputError(f"{path} is listed in {folder / MANIFEST} (run {manifest['run_id']}) but missing")
    if file_sha256(path) != manifest["files"][name].get("sha256"):
        raise InvalidInputError(f"{path} was changed after run {manifest['run_id']} wrote it (its sha256 differs "
                                f"from {folder / MANIFEST}); rerun the command to rebuild it")
    return path


def run_files(folder: str | os.PathLike[str], exclude: Collection[str] = ()) -> dict[str, Path] | None:
    """The files of the run in `folder` (name relative to the folder -> path), each checked against the sha256 its
    manifest records, but for the names in `exclude` (left out unchecked: e.g. a report's own outputs, which a
    later report rewrites); None when the folder has no manifest. Raises InvalidInputError naming the first listed
    file that is missing or whose content changed since the run wrote it (never a mix of two runs' files)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    return {name: _checked(folder, manifest, name) for name in sorted(manifest["files"]) if name not in exclude}


def report_inputs(folder: str | os.PathLike[str]) -> Callable[[str], Path | None]:
    """A look-up `name -> path` of the files a report may read from `folder`: with a manifest, a file it lists,
    checked when looked up (InvalidInputError naming it when it changed or is missing), and None for a file the run
    did not write, as if absent; a report's own outputs, rewritten by a later `certify report`, are never looked
    up. A folder without a manifest (written before manifests, or assembled by hand) gives every existing file."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return lambda name: (folder / name) if (folder / name).is_file() else None
    return lambda name: _checked(folder, manifest, name) if name in manifest["files"] else None


class RunDirectory:
    """The output folder of one run of `command`, with its manifest (module docstring).

    Use as a context manager: `with RunDirectory(out, command=argv, overwrite=False) as run: run.write(name, data)`.
    On entry the folder is created (its parent must exist: UsageError otherwise) and the rerun rules applied; on
    a normal exit the status becomes `finished` with the end time; on an exception (KeyboardInterrupt included) it
    becomes `interrupted` and the exception propagates. `run.done` is True when the same command had already
    finished there: nothing is written and the caller has nothing to do. `run.reused(name)` says whether a resumed
    run kept `name` from the run it resumes (its hash checked), so a step whose outputs are all kept can be skipped.
    Thread-safe: `write`, `save` and `record` may be called from several threads.
    """

    def __init__(self, path: str | os.PathLike[str], command: Sequence[str], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.command = [str(a) for a in command if str(a) != OVERWRITE_FLAG]
        self.overwrite = bool(overwrite)
        self.done = False
        self.manifest: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- entering: the rerun rules -------------------------------------------------------------------------------
    def __enter__(self) -> "RunDirectory":
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"the output folder {self.path} is a file; a run writes into a folder")
        if not self.path.parent.is_dir():
            raise UsageError(f"cannot create the output folder {self.path}: its parent {self.path.parent} does not exist")
        self.path.mkdir(exist_ok=True)
        old = read_manifest(self.path) if not self.overwrite else self._old_manifest_for_overwrite()
        kept: dict[str, Any] = {}
        if self.overwrite:
            self._clear(old)
        elif old is not None:
            if old["command"] != self.command:
                raise UsageError(f"{self.path} holds the output of another command ({' '.join(old['command'])}); "
                                 f"pass {OVERWRITE_FLAG} to replace it, or choose another folder")
            if old["status"] == "finished":
                self.done = True
                self.manifest = old
                print(f"certify: {self.path} already holds the finished output of this command (run {old['run_id']}, "
                      f"finished {old.get('finished', '?')}); nothing to do (pass {OVERWRITE_FLAG} to run it again)",
                      file=sys.stderr)
                return self
            kept = self._verified_entries(old)
        elif any(self.path.iterdir()):
            raise UsageError(f"{self.path} already holds files that no run manifest lists; pass {OVERWRITE_FLAG} to "
                             "write into it anyway (only the files a manifest lists are ever deleted), or choose "
                             "another folder")
        self.manifest = {
            "format": MANIFEST_FORMAT,
            "run_id": str(uuid.uuid4()),
            "command": self.command,
            "versions": {"certify": _version("certify"), "torch": _version("torch"),
                         "python": platform.python_version()},
            "started": _now(),
            "status": "running",
            "files": kept,
        }
        if old is not None and not self.overwrite:
            self.manifest["resumes"] = old["run_id"]
        self._flush()
        return self

    def _old_manifest_for_overwrite(self) -> dict[str, Any] | None:
        try:
            return read_manifest(self.path)
        except InvalidInputError:
            return None  # an unreadable manifest lists nothing we could delete

    def _clear(self, old: dict[str, Any] | None) -> None:
        """--overwrite: delete the files the old manifest lists (only those) and the manifest itself."""
        for name in (old or {}).get("files", {}):
            try:
                _inside(self.path, name).unlink(missing_ok=True)
            except InvalidInputError:
                continue  # a name outside the folder is never deleted
        (self.path / MANIFEST).unlink(missing_ok=True)

    def _verified_entries(self, old: dict[str, Any]) -> dict[str, Any]:
        """The old run's files whose content still matches its manifest, marked reused."""
        kept = {}
        for name, entry in old["files"].items():
            try:
                path = _inside(self.path, name)
            except InvalidInputError:
                continue
            if path.is_file() and file_sha256(path) == entry.get("sha256"):
                kept[name] = {**entry, "reused": True}
        return kept

    # -- writing -----------------------------------------------------------------------------------------------
    def _target(self, name: str | os.PathLike[str]) -> tuple[str, Path]:
        """(name relative to the folder, path) for a name given relative to the folder or as a path inside it."""
        path = Path(name)
        for base in (self.path, self.path.resolve()):
            if path.is_relative_to(base) and (path.is_absolute() == base.is_absolute()):
                path = path.relative_to(base)
                break
        else:
            if path.is_absolute():
                raise UsageError(f"{name} is outside the run folder {self.path}")
        relative = path.as_posix()
        return relative, _inside(self.path, relative)

    def write(self, name: str | os.PathLike[str], data: bytes | str) -> Path:
        """Write `data` to `name` (relative to the folder; sub-folders are created) atomically and record it."""
        payload = _payload(data)
        return self.save(name, lambda f: f.write(payload))

    def save(self, name: str | os.PathLike[str], writer: Callable[[IO[bytes]], Any]) -> Path:
        """`atomic_save` of `name` (relative to the folder; sub-folders are created), then recorded."""
        _, path = self._target(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, writer)
        return self.record(path)

    def record(self, *names: str | os.PathLike[str]) -> Path:
        """Record files already written into the folder (by code that writes them itself) with their sha256; the
        manifest is rewritten once. Returns the last path. InvalidInputError for a file that does not exist."""
        path = self.path
        entries = {}
        for name in names:
            relative, path = self._target(name)
            if not path.is_file():
                raise InvalidInputError(f"cannot record {path} in the run manifest: no such file")
            entries[relative] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        with self._lock:
            self.manifest["files"].update(entries)
            self._flush()
        return path

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(mtime_ns, size) of every file under the folder, for `record_changed` after a step that writes files
        itself."""
        return {p.relative_to(self.path).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in self.path.rglob("*") if p.is_file() and not p.name.endswith(".partial")}

    def record_changed(self, before: dict[str, tuple[int, int]]) -> list[str]:
        """Record every file created or modified since the `snapshot` `before` (the manifest excluded); returns
        their names."""
        changed = [name for name, stamp in self.snapshot().items() if name != MANIFEST and before.get(name) != stamp]
        if changed:
            self.record(*changed)
        return changed

    def reused(self, *names: str) -> bool:
        """True when every file of `names` was kept from the run this one resumes (its content checked)."""
        files = self.manifest.get("files", {})
        return all(files.get(name, {}).get("reused", False) for name in names)

    def _flush(self) -> None:
        atomic_write(self.path / MANIFEST, json.dumps(self.manifest, indent=1))

    # -- leaving -----------------------------------------------------------------------------------------------
    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        if self.done:
            return
        with self._lock:
            if kind is None:
                self.manifest["status"] = "finished"
                self.manifest["finished"] = _now()
            else:
                self.manifest["status"] = "interrupted"
                self.manifest["interrupted"] = _now()
                self.manifest["reason"] = kind.__name__ + (f": {error}" if str(error) else "")
            self._flush()
