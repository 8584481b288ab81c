"""What earlier tests left unchecked in the run's files and checks: temporary names beside the
target, output_problem, every bad checkpoint field, the sample grid's layout, history.csv's
epoch column, the loss plot's point budget, the classifier cache key, non-finite image counts,
DCGAN batch-norm init and trained label embeddings."""

import re

import numpy as np
import pytest
import torch


def test_temp_path_is_a_hidden_name_in_the_targets_folder(tmp_path):
    """os.replace is atomic only within one file system: the temporary must sit beside the target."""
    import os

    from fastgan._files import temp_path

    target = tmp_path / "sub" / "result.json"
    tmp = temp_path(target)
    assert os.path.dirname(tmp) == str(tmp_path / "sub")
    assert os.path.basename(tmp).startswith(".result.json.tmp") and tmp != str(target)


def test_output_problem_names_a_file_in_the_way_however_deep(tmp_path):
    from fastgan._files import output_problem

    (tmp_path / "afile").write_text("")
    assert output_problem(tmp_path / "new" / "deeper" / "x.json") is None
    for path in (tmp_path / "afile" / "x.json", tmp_path / "afile" / "a" / "b" / "x.json"):
        msg = output_problem(path)
        assert msg == f"{path}: {tmp_path / 'afile'} is a file, not a folder", msg
    assert output_problem(tmp_path / "afile", folder=True) == f"{tmp_path / 'afile'} is a file, not a folder"
    assert output_problem(tmp_path, folder=True) is None
    assert output_problem(tmp_path) == f"{tmp_path} is a folder, not a file"


def _state(**fields):
    state = {
        "step": 3,
        "generator": {"w": torch.zeros(2)},
        "discriminator": {"w": torch.zeros(2)},
        "opt_g": {"state": {}, "param_groups": [{}]},
        "opt_d": {"state": {}, "param_groups": [{}]},
        "history": torch.zeros(3, 2),
        "rng": {
            "torch": torch.zeros(4, dtype=torch.uint8),
            "noise": torch.zeros(4, dtype=torch.uint8),
            "device": "cpu",
        },
        "train_seconds": 1.5,
        "evals": [{"step": 3}],
    }
    state.update(fields)
    return state


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(history=torch.zeros(5, 3)), "bad history"),
        (dict(opt_g={"state": {}, "param_groups": ["lr"]}), "bad opt_g"),
        (dict(rng={"noise": "x"}), "rng['noise']"),
        (dict(rng={"epoch": torch.zeros(4)}), "rng['epoch']"),
        (dict(rng={"cuda": torch.zeros(4, dtype=torch.uint8), "device": 0}), "rng['device']"),
        (dict(train_seconds=float("nan")), "bad train_seconds"),
        (dict(train_seconds=-1.0), "bad train_seconds"),
        (dict(evals=[{"step": True}]), "bad evals"),
    ],
)
def test_check_content_rejects_each_bad_field(fields, fragment):
    from fastgan.train.checkpoint_checks import check_content
    from fastgan.train.config import CheckpointError

    check_content("c.pt", _state())  # the good state passes
    check_content("c.pt", _state(step=0))  # a checkpoint of step 0 is a checkpoint
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        check_content("c.pt", _state(**fields))


def test_make_grid_layout_padding_and_scale():
    from fastgan.train.images import make_grid

    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # 3 images 2x3
    g = make_grid(images, ncol=2, pad=1)
    assert g.shape == (1 + 2 * (2 + 1), 1 + 2 * (3 + 1))  # 2 rows, 2 columns
    assert (g[1:3, 1:4] == 0.0).all() and (g[1:3, 5:8] == 0.5).all() and (g[4:6, 1:4] == 1.0).all()
    border = np.ones_like(g, dtype=bool)
    for r0, c0 in ((1, 1), (1, 5), (4, 1)):
        border[r0 : r0 + 2, c0 : c0 + 3] = False
    assert (g[border] == 0.5).all()  # grey padding, empty cell
    big = make_grid(images, ncol=2, pad=1, scale=3)
    assert big.shape == (21, 27) and (big == g.repeat(3, 0).repeat(3, 1)).all()
    rgb = make_grid(torch.zeros(2, 3, 4, 4), ncol=2, pad=0)
    assert rgb.shape == (4, 8, 3)


def test_history_csv_epoch_column_and_round_trip(tmp_path):
    from fastgan.train.images import read_history, write_history

    h = torch.tensor([[0.5 + i, 1.25 * i] for i in range(7)])
    write_history(h, tmp_path / "h.csv", steps_per_epoch=3)
    rows = (tmp_path / "h.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,d_loss,g_loss"
    assert [r.split(",")[:2] for r in rows[1:]] == [[str(i), str((i - 1) // 3 + 1)] for i in range(1, 8)]
    torch.testing.assert_close(read_history(tmp_path / "h.csv"), h.double())
    # appending the rows after the first 4 gives the same file as writing all of them
    write_history(h[:4], tmp_path / "a.csv", steps_per_epoch=3)
    write_history(h, tmp_path / "a.csv", steps_per_epoch=3, first_row=4)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "h.csv").read_text()


@pytest.mark.parametrize("steps", [2500, 5000, 7919])
def test_loss_plot_draws_at_most_plot_points_per_curve(tmp_path, monkeypatch, steps):
    from fastgan.train import images

    figs = []
    monkeypatch.setattr(images, "save_figure", lambda fig, path: figs.append(fig))
    h = torch.rand(steps, 2)
    images.plot_losses(h, tmp_path / "l.png", steps_per_epoch=100)
    ax = figs[0].axes[0]
    assert len(ax.lines) == 2 and all(len(line.get_xdata()) <= images.PLOT_POINTS for line in ax.lines)
    bands = ax.collections
    assert len(bands) == 2
    for band in bands:  # each band covers the steps to the last whole bin
        x = band.get_paths()[0].vertices[:, 0]
        assert x.max() >= steps - steps // images.PLOT_POINTS - 1 and len(x) <= 2 * images.PLOT_POINTS + 5


# -- metrics ------------------------------------------------------------------------------


def test_dataset_hash_covers_labels_and_shapes():
    from fastgan.metrics.classifier import dataset_hash

    x = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    h = dataset_hash(x, y)
    assert h == dataset_hash(x.clone(), y.clone())
    assert h != dataset_hash(x, y.flip(0))  # relabelled
    assert h != dataset_hash(x.view(3, 2, 28, 28), y)  # same bytes, other shape
    x2 = x.clone()
    x2[5, 27, 27] ^= 1
    assert h != dataset_hash(x2, y)


class _Spiky(torch.nn.Module):
    """A generator whose images are all finite except one NaN pixel in image 2 and +inf in image 5."""

    latent_dim = 4

    def forward(self, z, labels=None):
        x = torch.zeros(z.shape[0], 1, 28, 28)
        if x.shape[0] > 5:
            x[2, 0, 3, 3] = float("nan")
            x[5, 0, 0, 0] = float("inf")
        return x


def test_nonfinite_images_counts_images_with_any_bad_pixel():
    import importlib

    ev = importlib.import_module("fastgan.metrics.evaluate")  # the module (the package exports the function)
    from fastgan.train import TrainConfig

    class FakeEvaluator(ev.Evaluator):
        def __init__(self):
            torch.manual_seed(0)
            from fastgan.metrics.classifier import LeNet

            self.model, self.device, self.batch_size = LeNet((2, 4), 8).eval(), torch.device("cpu"), 1000
            self.real_stats = (torch.zeros(8, dtype=torch.float64), torch.eye(8, dtype=torch.float64))

    cfg = TrainConfig(model="mlp", latent_dim=4)
    m = FakeEvaluator()(_Spiky(), cfg, n=8)
    assert m["nonfinite_images"] == 2


# -- models -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dcgan", "mlp-bn"])
def test_batch_norm_scale_is_drawn_from_n_1_0_02(name):
    from torch import nn

    from fastgan.models import build

    torch.manual_seed(0)
    G, D = build(name)
    w = torch.cat(
        [
            m.weight.detach()
            for m in list(G.modules()) + list(D.modules())
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
    )
    assert abs(w.mean().item() - 1.0) < 0.01 and 0.012 < w.std().item() < 0.028


@pytest.mark.parametrize("name", ["cgan", "cdcgan"])
def test_label_embeddings_are_trained(name):
    from fastgan.models import build

    torch.manual_seed(0)
    G, D = build(name)
    z, labels = torch.randn(8, 100), torch.arange(8)
    D(G(z, labels), labels).sum().backward()
    for net in (G, D):
        assert net.embed.weight.grad is not None and net.embed.weight.grad.abs().sum() > 0
