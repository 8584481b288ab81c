"""The files of one run folder: checkpoint.pt, config.json, train.log, samples/ (a grid per
epoch) and samples.png, history.csv, losses.png (and tb/ with tensorboard, written by the
trainer). RunFolder.write() is the background writer's job; the training thread only takes
the snapshot it writes (see Trainer._write_in_background)."""

import os
import shutil
import time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run per folder is then the user's care
    fcntl = None

from fastgan._files import atomic_write, remove_stale_temps
from fastgan.train.checkpoint import save_checkpoint
from fastgan.train.config import ConfigError
from fastgan.train.images import plot_losses, save_grid, write_history

CHECKPOINT = "checkpoint.pt"
PLOT_EVERY_S = 10.0  # losses.png is redrawn at most this often (and at the end of a run)
RUN_FILES = (CHECKPOINT, "config.json", "train.log", "history.csv", "losses.png", "samples.png")
LOCK = ".fastgan-train.lock"  # held (flock) by the run that writes the folder, with its PID inside


class FolderLock:
    """One run per folder: an OS file lock on OUT/.fastgan-train.lock, held while a run writes
    there. The OS releases it when the process ends, however it ends (kill -9 too), so a crashed
    run never blocks the next one; the file itself stays, holding the last holder's PID."""

    def __init__(self, out):
        self.out = out
        self.path = os.path.join(out, LOCK)
        self._fd = None

    def check(self):
        """ConfigError naming the PID of a run that holds the folder now (nothing is made)."""
        if os.path.isfile(self.path) and self._fd is None:
            self.acquire()
            self.release()

    def acquire(self):
        if fcntl is None or self._fd is not None:
            return
        os.makedirs(self.out, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"--out {self.out} is in use by another fastgan train (PID {holder}): wait for "
                "it to end, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RunFolder:
    """Writes a run's files into `out`. Its counters (_csv_written, _plotted, checkpoint_step)
    are touched only by the thread that calls write() while the run trains."""

    def __init__(self, out, steps_per_epoch, grid_cols, title):
        self.out = out
        self.checkpoint_path = os.path.join(out, CHECKPOINT)
        self.steps_per_epoch = steps_per_epoch
        self.grid_cols = grid_cols
        self.title = title
        self.checkpoint_step = None  # the step of the last checkpoint written (or read)
        self._csv_written = (0, 0)  # (rows, evaluations) history.csv holds from this process
        self._plotted = None  # when losses.png was last drawn (perf_counter)

    def remove_stale_temps(self):
        """The temporary files of writes that a killed run left behind (see fastgan._files)."""
        return remove_stale_temps(self.out) + remove_stale_temps(os.path.join(self.out, "samples"))

    def clear(self):
        """--overwrite: removes the outputs of the run that was here (only what a run writes)."""
        for name in RUN_FILES:
            path = os.path.join(self.out, name)
            if os.path.isfile(path):
                os.remove(path)
        grids = os.path.join(self.out, "samples")
        if os.path.isdir(grids):
            for name in os.listdir(grids):
                if name.endswith(".png") and name.startswith(("epoch_", "step_")):
                    os.remove(os.path.join(grids, name))
        shutil.rmtree(os.path.join(self.out, "tb"), ignore_errors=True)

    def write_config(self, cfg):
        with atomic_write(os.path.join(self.out, "config.json"), "w") as f:  # makes the folder
            f.write(cfg.to_json())

    def log(self, line):
        with open(os.path.join(self.out, "train.log"), "a") as f:
            f.write(line + "\n")

    def write(self, epoch_label, final, images, history, evals, state):
        """The checkpoint `state` (when given) first, since a sample grid that cannot be written must
        not cost the run its checkpoint; then, for an epoch_label, its grid of `images` (also as
        samples.png), history.csv and losses.png (redrawn at most every PLOT_EVERY_S seconds and
        when final: a short epoch must not spend as long again redrawing its curves)."""
        if state is not None:
            save_checkpoint(state, self.checkpoint_path)
            self.checkpoint_step = state["step"]
        if epoch_label is None:
            return
        os.makedirs(os.path.join(self.out, "samples"), exist_ok=True)
        grid = os.path.join(self.out, "samples", f"{epoch_label}.png")
        save_grid(images, grid, ncol=self.grid_cols)
        with atomic_write(os.path.join(self.out, "samples.png")) as f, open(grid, "rb") as src:
            shutil.copyfileobj(src, f)  # the same PNG: encoded once
        # history.csv: the whole file once (and when an evaluation adds columns or values), then
        # each epoch's new rows appended
        path = os.path.join(self.out, "history.csv")
        rows, n_evals = self._csv_written
        first = rows if n_evals == len(evals) and 0 < rows <= len(history) and os.path.isfile(path) else 0
        write_history(history, path, self.steps_per_epoch, evals, first_row=first)
        self._csv_written = (len(history), len(evals))
        now = time.perf_counter()
        if final or self._plotted is None or now - self._plotted >= PLOT_EVERY_S:
            plot_losses(
                history, os.path.join(self.out, "losses.png"), self.steps_per_epoch, title=self.title, evals=evals
            )
            self._plotted = now
