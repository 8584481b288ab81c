"""Files written whole or not at all: the bytes go to a temporary name beside the target, which
is renamed over it (os.replace: atomic on one file system) only when writing succeeded; on any
error the temporary is removed and an existing target is left as it was."""
import contextlib
import os


def temp_path(path):
    """A temporary name beside `path` (same folder, so the rename does not cross file systems)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """with atomic_write(path, "w") as f: ... -- path appears, complete, only if the block succeeds."""
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
