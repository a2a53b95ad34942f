"""Atomic file writes: a crash mid-write never leaves a truncated checkpoint, LUT or result file."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not e.filename:  # a full disk on write or fsync names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, so not per write


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` through `atomic_write_bytes`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_json(obj: Any, path: str | Path) -> None:
    """`json.dump` (indented) through `atomic_write_bytes`."""
    import json

    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def atomic_save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure (from `figure`) as PNG through `atomic_write_bytes`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def figure(**kwargs: Any) -> Any:
    """A matplotlib Figure outside pyplot: it renders to files without choosing a backend, so a
    notebook user's backend is left alone, and nothing keeps it alive once dropped."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def emit_result(result: dict, out: str | Path | None = None) -> None:
    """Print a benchmark's result as one JSON line and, with `out`, also write it there atomically."""
    import json

    line = json.dumps(result)
    print(line)
    if out:
        atomic_write_bytes(out, (line + "\n").encode())


TEMP_GLOB = ".*.tmp"  # what `atomic_write_bytes` leaves behind when the process is killed mid-write


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files an interrupted atomic write left in `folder`; returns them. Only
    safe while holding the folder's lock (`RunLock.acquire` calls it), so no live writer's file is taken."""
    removed = []
    for tmp in Path(folder).glob(TEMP_GLOB):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock."""


class RunLock:
    """An exclusive lock on a run folder (`flock` on FOLDER/.lock, released when the process
    exits however it exits), so two runs never interleave their checkpoints and metrics. Taking
    it clears the temp files a killed writer left. Platforms without `fcntl` run unlocked."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._file = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise FolderBusy(f"{self.path.parent}: another run (pid {holder}) is writing here; wait for it or choose another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        remove_stale_temps(self.path.parent)
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def error_line(e: BaseException) -> str:
    """One line for the user: an OSError names its path and the system's reason (read-only, disk
    full, a file where a folder is expected); anything else is its message."""
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
        return f"{where}: {e.strerror}" if where else e.strerror
    text = str(e).strip()
    if not text:
        return type(e).__name__
    last = text.splitlines()[-1]  # a DataLoader worker's error arrives as its whole traceback
    prefix = f"{type(e).__module__}.{type(e).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def check_writable(path: str | Path, what: str) -> None:
    """ValueError naming `what` (the parameter, as `name`) unless a file can be written at `path` (its folder is created):
    checked before long work, so it does not fail only at the end."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a folder; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot write there ({e.strerror})") from None


def load_failure(e: BaseException) -> str:
    """Why `torch.load` refused a file, in a few words: torch's own text runs to many lines and
    suggests `weights_only=False`, which would run whatever code the file holds."""
    if type(e).__name__ == "UnpicklingError" or "weights_only" in str(e):
        return "not a torch file this library wrote, or it holds more than tensors and plain data"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
