"""Sample grids, loss history and loss curves, written atomically (temp name + rename).

PNGs are written with matplotlib's Agg canvas (no pyplot state, no display needed).
"""

import csv
import math

import numpy as np
import torch

from fastgan._files import atomic_write


def make_grid(images, ncol=8, pad=2, scale=1):
    """(N, C, H, W) images in [-1, 1] -> an (H', W') or (H', W', 3) float array in [0, 1]."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(0.5).numpy()
    n, c, h, w = x.shape
    nrow = (n + ncol - 1) // ncol
    grid = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32) * 0.5
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(images, path, ncol=8, scale=2):
    """Writes a PNG grid of (N, C, H, W) images in [-1, 1]; returns the grid array."""
    from matplotlib import image as mpimg

    grid = make_grid(images, ncol, scale=scale)
    with atomic_write(path) as f:
        mpimg.imsave(f, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return grid


PLOT_POINTS = 2000  # points per curve in losses.png
EVAL_COLUMNS = ("train_seconds", "fid", "inception_score", "class_entropy", "label_accuracy")


def write_history(history, path, steps_per_epoch, evals=(), first_row=0):
    """history: (steps, 2) tensor of (d_loss, g_loss) per step -> CSV step,epoch,d_loss,g_loss;
    with evals (Trainer.evals), also the EVAL_COLUMNS, filled on the evaluated steps.
    first_row > 0: the file holds rows 1..first_row already, with these columns: only the rows
    after them are appended (a long run's epoch end then costs its own rows, not the whole run)."""
    by_step = {e["step"]: e for e in evals}

    def lines(start):
        for i, (d, g) in enumerate(history[start:].tolist(), start + 1):
            row = f"{i},{(i - 1) // steps_per_epoch + 1},{d:.6g},{g:.6g}"
            if evals:
                e = by_step.get(i, {})
                row += "," + ",".join("" if e.get(c) is None else f"{e[c]:.6g}" for c in EVAL_COLUMNS)
            yield row + "\n"

    if first_row:
        with open(path, "a", newline="") as f:
            f.writelines(lines(first_row))
        return
    with atomic_write(path, "w", newline="") as f:
        f.write(",".join(["step", "epoch", "d_loss", "g_loss"] + (list(EVAL_COLUMNS) if evals else [])) + "\n")
        f.writelines(lines(0))


def read_history(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return torch.tensor([[float(r["d_loss"]), float(r["g_loss"])] for r in rows], dtype=torch.float64)


def _or_nan(value):
    return math.nan if value is None else value


def plot_losses(history, path, steps_per_epoch, title="", evals=()):
    """A loss-curve PNG (per step, and smoothed) of the D and G losses; with evals
    (Trainer.evals), a second panel of the classifier FID against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = history.numpy() if torch.is_tensor(history) else np.asarray(history)
    fig = Figure(figsize=(7, 7 if evals else 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2 if evals else 1, 1, 1)
    if len(h):
        steps = np.arange(1, len(h) + 1)
        k = max(1, min(len(h) // 20, steps_per_epoch))
        # at most PLOT_POINTS per curve (50 epochs are 46,900 steps: drawing each took seconds an
        # epoch): the per-step losses as the band of each bin's min and max, the mean line thinned
        b = -(-len(h) // PLOT_POINTS)
        for col, name, color in ((0, "D loss", "tab:blue"), (1, "G loss", "tab:orange")):
            if b == 1:
                ax.plot(steps, h[:, col], color=color, alpha=0.25, linewidth=0.6)
            else:
                n = len(h) // b * b
                bins = h[:n, col].reshape(-1, b)
                ax.fill_between(steps[b - 1 : n : b], bins.min(1), bins.max(1), color=color, alpha=0.2, linewidth=0)
            if len(h) >= k:
                c = np.concatenate([[0.0], np.cumsum(h[:, col], dtype=np.float64)])
                smooth = (c[k:] - c[:-k]) / k  # the running mean of k, in O(steps)
                ax.plot(steps[k - 1 :][::b], smooth[::b], color=color, label=f"{name} (mean of {k})")
    ax.set_xlabel("step")
    ax.set_ylabel("BCE loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(h):
        ax.legend()
    if evals:
        q = fig.add_subplot(2, 1, 2, sharex=ax)
        q.plot([e["step"] for e in evals], [_or_nan(e.get("fid")) for e in evals], "o-", color="tab:green")
        q.set_yscale("log")
        q.set_xlabel("step")
        q.set_ylabel("classifier FID (lower is better)")
        q.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path):
    """Writes a matplotlib Figure (with an Agg canvas) as a PNG, atomically."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
