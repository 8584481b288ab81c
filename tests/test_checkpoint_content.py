"""load_checkpoint checks what a checkpoint holds, not only its format markers: a torch file
with the wrong content is a CheckpointError naming the field (no traceback later in sample or
--resume); load_module_state explains weights that do not fit a model."""

import fractions
import os

import pytest
import torch

from fastgan.models import build
from fastgan.train import CheckpointError, TrainConfig, Trainer, load_checkpoint, sample

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(out, **kw):
    base = dict(
        model="mlp",
        g_widths=(16,),
        d_widths=(16,),
        latent_dim=8,
        steps=2,
        batch_size=8,
        log_every=1,
        num_samples=4,
        out=str(out),
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real checkpoint of a 2-step run (every field the trainer writes), which loads."""
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny(out)).fit()
    path = out / "checkpoint.pt"
    assert load_checkpoint(path)["step"] == 2
    return path


def damaged(good, tmp_path, config=None, **fields):
    """A copy of good with some fields replaced (config: options merged into its config dict);
    written by torch.save with weights_only-safe content: it passes torch.load's check."""
    state = torch.load(good, weights_only=True)
    if config is not None:
        state["config"] = dict(state["config"], **config) if isinstance(config, dict) else config
    state.update(fields)
    path = tmp_path / "damaged.pt"
    torch.save(state, path)
    torch.load(path, weights_only=True)
    return path


def error(path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return str(info.value)


@pytest.mark.parametrize(
    "config, fragments",
    [
        (dict(latent_dim="abc"), ["latent_dim must be an integer", "'abc'"]),
        (dict(noise="weird"), ["noise must be one of normal, uniform", "'weird'"]),
        (dict(lr="fast"), ["lr must be a number", "'fast'"]),
        (dict(batch_size=0), ["batch_size must be a positive integer"]),
        (dict(seed=1.5), ["seed must be an integer"]),
        (dict(g_widths=["x"]), ["g_widths must be a list of integers"]),
        (dict(epochs=3), ["give epochs or steps, not both"]),
        (dict(bogus=1), ["unknown training options: bogus"]),
        ([1, 2], ["a list, not a dict of training options"]),
    ],
)
def test_bad_config(good, tmp_path, config, fragments):
    msg = error(damaged(good, tmp_path, config=config))
    assert msg.startswith(f"{tmp_path / 'damaged.pt'}: bad config in checkpoint: "), msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert "--" not in msg, msg  # the checkpoint's field, not a command-line option


@pytest.mark.parametrize(
    "fields, fragments",
    [
        (dict(generator="x"), ["bad generator in checkpoint", "dict of tensors", "str"]),
        (dict(generator={"net.0.weight": "x"}), ["bad generator", "'net.0.weight' must be a tensor"]),
        (dict(discriminator={1: torch.zeros(2)}), ["bad discriminator", "named by strings"]),
        (dict(discriminator=[torch.zeros(2)]), ["bad discriminator", "dict of tensors"]),
        (dict(step=-1), ["bad step", "integer >= 0", "-1"]),
        (dict(step="3"), ["bad step", "'3'"]),
        (dict(step=True), ["bad step", "True"]),
        (dict(opt_g="x"), ["bad opt_g", "must be a dict"]),
        (dict(opt_d={"state": {}}), ["bad opt_d", "param_groups"]),
        (dict(history=torch.zeros(5)), ["bad history", "shape (N, 2)", "(5,)"]),
        (dict(history=[[1.0, 2.0]]), ["bad history", "list"]),
        (dict(rng="x"), ["bad rng", "must be a dict"]),
        (dict(rng={"torch": "x"}), ["bad rng", "rng['torch']"]),
        (dict(train_seconds="x"), ["bad train_seconds"]),
        (dict(evals=[{"fid": 1.0}]), ["bad evals", "'step'"]),
    ],
)
def test_bad_field(good, tmp_path, fields, fragments):
    msg = error(damaged(good, tmp_path, **fields))
    assert msg.startswith(f"{tmp_path / 'damaged.pt'}: "), msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_sample_reports_bad_content(good, tmp_path):
    """sample() used to fail with TypeError (generator) or draw with an unknown noise kind."""
    path = damaged(good, tmp_path, generator="x")
    with pytest.raises(CheckpointError, match="bad generator in checkpoint"):
        sample(path, n=4, out=str(tmp_path / "s.png"))
    path = damaged(good, tmp_path, config=dict(noise="weird"))
    with pytest.raises(CheckpointError, match="bad config in checkpoint: noise must be one of"):
        sample(path, n=4, out=str(tmp_path / "s.png"))
    path = damaged(good, tmp_path, config=dict(latent_dim="abc"))
    with pytest.raises(CheckpointError, match="latent_dim must be an integer"):
        sample(path, n=4, out=str(tmp_path / "s.png"))
    assert not os.path.exists(tmp_path / "s.png")


def test_resume_reports_bad_content(good, tmp_path):
    """--resume used to blame --latent-dim (an option not given) or fail with TypeError."""
    out = tmp_path / "run"
    out.mkdir()
    for fields in (dict(config=dict(latent_dim="abc")), dict(generator="x")):
        path = damaged(good, tmp_path, **fields)
        os.replace(path, out / "checkpoint.pt")
        with pytest.raises(CheckpointError) as info:
            Trainer(tiny(out, steps=4), resume=True, explicit={"steps"})
        assert "--latent-dim" not in str(info.value)
        assert ("latent_dim" if "config" in fields else "generator") in str(info.value)


def test_directory(tmp_path):
    assert error(tmp_path) == f"{tmp_path} is a directory, not a checkpoint file"


def test_random_bytes_give_no_weights_only_false_advice(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 8)
    msg = error(path)
    assert msg.startswith(f"cannot read checkpoint {path}") and "damaged" in msg, msg
    assert "weights_only" not in msg and "likely succeed" not in msg, msg


def test_python_object_is_named_without_weights_only_false_advice(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"format": "fastgan-checkpoint", "x": fractions.Fraction(1, 3)}, path)
    msg = error(path)
    assert msg.startswith(f"cannot read checkpoint {path}") and "fractions.Fraction" in msg, msg
    assert "weights_only=False" not in msg and "likely succeed" not in msg, msg
    assert "\x1b" not in msg and "\n" not in msg, msg


def test_load_module_state(tmp_path):
    from fastgan.train.checkpoint import load_module_state

    G, _ = build("dcgan", latent_dim=8, g_widths=(16, 8), d_widths=(8, 16))
    other, _ = build("dcgan", latent_dim=8, g_widths=(32, 8), d_widths=(8, 16))
    # fits: loaded, module returned
    same, _ = build("dcgan", latent_dim=8, g_widths=(16, 8), d_widths=(8, 16))
    assert load_module_state(G, same.state_dict(), "x.pt", "generator") is G
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), same.state_dict().values()))
    # does not fit: missing and unexpected keys, size mismatches, all in a few lines
    weights = other.state_dict()
    first = next(iter(weights))
    del weights[first]
    weights["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_module_state(G, weights, "x.pt", "generator")
    msg = str(info.value)
    assert msg.startswith("x.pt: the generator weights do not fit this model:"), msg
    assert f"missing keys: {first}" in msg and "unexpected keys: extra.weight" in msg, msg
    assert "size mismatch for" in msg and "net.bn0.weight [32] in the file, [16] in the model" in msg, msg
    assert len(msg.splitlines()) <= 5 and "Error(s) in loading" not in msg, msg
    with pytest.raises(CheckpointError, match="x.pt: the discriminator weights are a str"):
        load_module_state(G, "x", "x.pt", "discriminator")


def test_sample_and_resume_explain_weights_that_do_not_fit(good, tmp_path):
    state = torch.load(good, weights_only=True)
    gen = dict(state["generator"])
    gen.pop(next(iter(gen)))  # one tensor missing
    path = damaged(good, tmp_path, generator=gen)
    with pytest.raises(CheckpointError, match="the mlp generator weights do not fit this model: missing keys"):
        sample(path, n=4, out=str(tmp_path / "g.png"))
    run = tmp_path / "run"
    run.mkdir()
    os.replace(path, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="the mlp generator weights do not fit this model"):
        Trainer(tiny(run, steps=4), resume=True, explicit={"steps"})


def test_a_checkpoint_without_training_state_samples_but_does_not_resume(good, tmp_path):
    state = torch.load(good, weights_only=True)
    for key in ("opt_g", "opt_d", "rng"):
        state.pop(key)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(state, run / "checkpoint.pt")
    sample(run / "checkpoint.pt", n=4, out=str(tmp_path / "g.png"))
    with pytest.raises(CheckpointError, match="cannot be resumed: it holds no opt_g, opt_d, rng"):
        Trainer(tiny(run, steps=4), resume=True, explicit={"steps"})
