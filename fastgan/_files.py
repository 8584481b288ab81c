"""Files written whole or not at all: the bytes go to a temporary name beside the target, which
is renamed over it (os.replace: atomic on one file system) only when writing succeeded; on any
error the temporary is removed and an existing target is left as it was."""
import contextlib
import os


def temp_path(path):
    """A temporary name beside `path` (same folder, so the rename does not cross file systems)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp{os.getpid()}")


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
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # missing folders are made; the first existing one must be one
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{path}: {parent} is a file, not a folder"
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
        torch.save(obj, tmp)
    return path
