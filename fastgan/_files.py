"""Files written whole or not at all: the bytes go to a temporary name beside the target, which
is renamed over it (os.replace: atomic on one file system) only when writing succeeded; on any
error the temporary is removed and an existing target is left as it was."""

import contextlib
import errno
import os
import re
import tempfile

_TEMP = re.compile(r"^\..+\.tmp(\d+)$")  # temp_path's names: .NAME.tmpPID


def temp_path(path):
    """A temporary name beside `path` (same folder, so the rename does not cross file systems)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp{os.getpid()}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(folder):
    """Removes the temporary files (temp_path's names) that processes which no longer run left in
    `folder` (a kill -9 in the middle of a write); returns their names. A live writer's are kept."""
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        path = os.path.join(folder, name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))) and os.path.isfile(path):
            try:
                os.remove(path)
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


def output_problem(path, folder=False):
    """Why `path` cannot be written as a file (folder=False) or used as an output folder, or None.
    Checked before the work that produces it, so that a long run does not fail at its end."""
    path = os.fspath(path)
    if not path:
        return "is empty"
    if folder:
        if os.path.exists(path) and not os.path.isdir(path):
            return f"{path} is a file, not a folder"
    elif os.path.isdir(path):
        return f"{path} is a folder, not a file"
    parent = os.path.abspath(path) if folder and os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # missing folders are made; the first existing one must be one
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{path}: {parent} is a file, not a folder"
    try:  # a folder we may not write into (permissions, a read-only or special file system)
        fd, probe = tempfile.mkstemp(prefix=".fastgan-probe-", dir=parent)
    except OSError as exc:
        return f"{path}: cannot write into {parent} ({exc.strerror or exc})"
    os.close(fd)
    os.remove(probe)
    return None


@contextlib.contextmanager
def atomic_target(path):
    """with atomic_target(path) as tmp: (write the file named tmp) -- for writers that take a file
    name. path appears, complete, only if the block succeeds; missing parent folders are made."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a folder, not a file", os.fspath(path))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:  # name the file the user asked for, never the temporary
        if exc.filename in (None, tmp) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """with atomic_write(path, "w") as f: ... -- the same, for writers that take an open file."""
    with atomic_target(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def atomic_torch_save(obj, path):
    """torch.save to a temporary name beside path, then rename: a reader never sees half a file."""
    import torch  # here: the CLI checks its output paths before loading torch

    # torch.save given a file name writes from C++; given a Python file, a Ctrl-C can land inside
    # one of its writes and torch then raises its own error over the KeyboardInterrupt
    with atomic_target(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # C++'s "iostream error" says nothing of why: ask the OS
            raise _write_error(tmp, exc) from None
    return path


def _write_error(tmp, exc):
    """The OSError behind a failed C++ write into tmp (a full disk: ENOSPC), found by writing a
    little more with Python; an EIO naming torch's message when that succeeds."""
    try:
        with open(tmp, "ab") as f:
            f.write(b"\0" * (1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as probe:
        if probe.errno is not None:
            return OSError(probe.errno, probe.strerror, tmp)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OSError(errno.EIO, f"could not be written ({first})", tmp)
