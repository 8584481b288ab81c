"""Where each parsed `fastgan` option ends up (in process: the Trainer, sample and the run
functions are replaced by recorders), the documented defaults, and the exit code of an OS error."""

import argparse

import pytest

from fastgan import cli
from fastgan._argtypes import MAX_SEED, seed
from fastgan.train import TrainConfig
from fastgan.train import config as config_mod


def _train_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_train_option_reaches_the_config_field_of_its_name():
    fields = set(config_mod.field_types())
    for action in _train_parser()._actions:
        for option in action.option_strings:
            if (
                option.startswith("--")
                and not option.startswith("--no-")
                and option not in ("--help", "--resume", "--overwrite", "--allow-changed-data", "--allow-changed-model")
            ):
                assert action.dest == option[2:].replace("-", "_") and action.dest in fields, (option, action.dest)


class _Stop(Exception):
    pass


def _captured_trainer_args(monkeypatch, argv):
    import fastgan.train

    seen = {}

    class FakeTrainer:
        def __init__(self, cfg, resume=False, explicit=None, overwrite=False, **kw):
            seen.update(cfg=cfg, resume=resume, explicit=explicit, overwrite=overwrite)
            raise _Stop

    monkeypatch.setattr(fastgan.train, "Trainer", FakeTrainer)
    with pytest.raises(_Stop):
        cli.main(argv)
    return seen


def test_train_options_reach_the_trainer(monkeypatch, tmp_path):
    seen = _captured_trainer_args(
        monkeypatch,
        [
            "train",
            "--out",
            str(tmp_path),
            "--resume",
            "--steps",
            "3",
            "--log-every",
            "1",
            "--lr-d",
            "1e-3",
            "--lr-g",
            "3e-4",
            "--no-cuda-graph",
            "--channels-last",
            "--eval-n",
            "9",
        ],
    )
    cfg = seen["cfg"]
    assert (cfg.steps, cfg.log_every, cfg.lr_d, cfg.lr_g, cfg.cuda_graph, cfg.channels_last, cfg.eval_n) == (
        3,
        1,
        1e-3,
        3e-4,
        False,
        True,
        9,
    )
    assert seen["resume"] is True and seen["overwrite"] is False
    assert seen["explicit"] == {"steps", "log_every", "lr_d", "lr_g", "cuda_graph", "channels_last", "eval_n"}


def test_train_defaults_are_the_documented_ones():
    cfg = TrainConfig()
    assert (cfg.model, cfg.dataset, cfg.batch_size, cfg.lr, cfg.beta1, cfg.seed, cfg.log_every, cfg.eval_n) == (
        "dcgan",
        "mnist-5k",
        64,
        2e-4,
        0.5,
        0,
        50,
        2000,
    )
    assert config_mod.DEFAULT_EPOCHS == 10  # README: "The default `fastgan train` is the DCGAN, 10 epochs"
    helps = {a.dest: a.help for a in _train_parser()._actions}
    assert f"default: {cfg.batch_size})" in helps["batch_size"]


def test_every_on_off_option_is_resumable():
    """--x / --no-x exists so a resumed run can change x: each must be in RESUMABLE."""
    on_off = {a.dest for a in _train_parser()._actions if isinstance(a, argparse.BooleanOptionalAction)}
    assert on_off and on_off <= set(TrainConfig.RESUMABLE), on_off - set(TrainConfig.RESUMABLE)


def test_rmsprop_learning_rates_and_grad_clip_zero():
    assert TrainConfig(optimizer="rmsprop", lr_d=1e-3).learning_rates() == (1e-3, 4e-4)
    assert TrainConfig(optimizer="rmsprop", lr_g=1e-3).learning_rates() == (8e-4, 1e-3)
    assert TrainConfig(optimizer="rmsprop", grad_clip=0.0).clip() is None  # --grad-clip 0: off
    assert TrainConfig(grad_clip=0.0).clip() is None


def test_an_os_error_exits_with_the_usage_code(monkeypatch, capsys):
    def fails(args):
        raise PermissionError(13, "Permission denied", "/x/checkpoint.pt")

    monkeypatch.setattr(cli, "cmd_train", fails)
    assert cli.main(["train"]) == 2
    assert "fastgan train: error: /x/checkpoint.pt Permission denied" in capsys.readouterr().err


def test_seed_zero_and_the_largest_seed_are_accepted():
    assert seed("0") == 0 and seed(str(MAX_SEED)) == MAX_SEED
    assert cli.build_parser().parse_args(["train", "--seed", "0"]).seed == 0


def test_sample_options_reach_sample(monkeypatch, tmp_path, capsys):
    import fastgan.train

    seen = {}
    monkeypatch.setattr(fastgan.train, "sample", lambda ckpt, **kw: seen.update(kw, checkpoint=ckpt))
    out = str(tmp_path / "g.png")
    assert (
        cli.main(
            [
                "sample",
                "--checkpoint",
                "c.pt",
                "--n",
                "9",
                "--label",
                "3",
                "--seed",
                "7",
                "--out",
                out,
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert seen == {"checkpoint": "c.pt", "n": 9, "label": 3, "out": out, "seed": 7, "device": "cpu", "ema": True}
