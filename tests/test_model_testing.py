"""The shared check of the models' CUDA-graph tests (model_testing.assert_trained_alike), run on
the CPU where it can be: it passes for two runs of one config and fails for two that differ, so
the cuda-marked tests built on it can fail."""

import pytest
from model_testing import assert_trained_alike

from fastgan.train import TrainConfig, Trainer


def _run(tmp_path, name, **kw):
    cfg = TrainConfig(
        model="discogan",
        steps=3,
        batch_size=8,
        device="cpu",
        progress=False,
        out=str(tmp_path / name),
        g_widths=(8, 16),
        d_widths=(8, 16),
        **kw,
    )
    t = Trainer(cfg)
    return t.fit(), t


def test_runs_of_one_config_train_alike_and_others_do_not(tmp_path):
    run = _run(tmp_path, "a")
    assert_trained_alike(run, _run(tmp_path, "b"))
    with pytest.raises(AssertionError):
        assert_trained_alike(run, _run(tmp_path, "c", seed=1))
    with pytest.raises(AssertionError):  # another G loss: other losses and weights
        assert_trained_alike(run, _run(tmp_path, "d", recon_weight=2.0))
