"""A user's own torch.nn GAN through fastgan's step, trainer and command (issue 21): the seed
tutorials' models as users write them (examples/), fastgan.fit, make_step((G, D)),
`fastgan train --model FILE.py` with its checks, and the refusals."""

import copy
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import fastgan
from fastgan.models import ModelError
from fastgan.models.user import load_file, prepare
from fastgan.train import ConfigError, load_checkpoint
from fastgan.train.step import d_pass_mergeable, make_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images(n=256, shape=(1, 28, 28), seed=1):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def fit(G, D, data, tmp_path, **options):
    base = dict(steps=3, batch_size=32, device="cpu", out=str(tmp_path / "run"), progress=False)
    return fastgan.fit(G, D, data, **{**base, **options})


def cli(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "fastgan.cli", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tutorial_mlp_relu():
    """The first tutorial's MLP GAN with ReLU in G (and flat images throughout)."""
    G = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1), nn.Sigmoid())
    return G, D


def small_dcgan64():
    m = example("dcgan64")
    G, D = m.Generator(nz=16, ngf=8, nc=3), m.Discriminator(ndf=8, nc=3)
    G.apply(m.weights_init)
    D.apply(m.weights_init)
    return G, D


# -- what prepare finds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, latent, sample, sigmoid",
    [
        (lambda: (example("mlp_gan").Generator(), example("mlp_gan").Discriminator()), (100,), (1, 28, 28), "model.7"),
        (tutorial_mlp_relu, (64,), (784,), "3"),
        (lambda: example("keras_mlp_gan").build(), (100,), (784,), "5"),
        (small_dcgan64, (16, 1, 1), (3, 64, 64), "main.12"),
    ],
    ids=["mlp", "mlp-relu-flat", "keras-mlp-bn", "dcgan64"],
)
def test_prepare_reads_z_the_image_shape_and_the_final_sigmoid_off_the_pair(make, latent, sample, sigmoid):
    G, D = make()
    before = copy.deepcopy(D.state_dict())
    pair = prepare(G, D)
    assert (pair.latent_shape, pair.sample_shape, pair.stripped_sigmoid, pair.conditional) == (
        latent,
        sample,
        sigmoid,
        False,
    )
    assert pair.D is not D and pair.G is not G  # copies: the user's modules are left as they are
    assert all(torch.equal(before[k], v) for k, v in D.state_dict().items())
    assert pair.D.state_dict().keys() == D.state_dict().keys()
    # the stripped D gives the logits of the original's probabilities
    x = torch.randn(4, *sample).clamp(-1, 1)
    D.eval(), pair.D.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(pair.D(x)), D(x), atol=1e-5, rtol=1e-5)


def test_the_probe_moves_no_running_statistics_and_keeps_every_mode():
    G, D = example("keras_mlp_gan").build()
    G[2].eval()  # a user's choice, kept
    stats = copy.deepcopy(G.state_dict())
    prepare(G, D, convert=False)
    assert all(torch.equal(stats[k], v) for k, v in G.state_dict().items())
    assert G.training and not G[2].training and G[0].training


def test_a_conditional_pair_is_found_and_needs_labels():
    m = example("cgan")
    pair = prepare(m.Generator(), m.Discriminator(), (1, 28, 28), labels_given=True)
    assert pair.conditional and pair.latent_shape == (100,)  # 110 inputs minus the 10 of the embedding
    with pytest.raises(ModelError, match="the data has none: give labels="):
        prepare(m.Generator(), m.Discriminator(), (1, 28, 28), labels_given=False)


# -- refusals, in Python and from the command line -------------------------------------------


def test_a_g_whose_images_are_not_the_datas_is_refused():
    G, D = tutorial_mlp_relu()
    with pytest.raises(ModelError, match=r"G's images have shape \(784,\), the data's \(3, 32, 32\)"):
        prepare(G, D, (3, 32, 32))


def test_a_d_that_does_not_return_one_logit_per_image_is_refused():
    G = nn.Sequential(nn.Linear(8, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 2))
    with pytest.raises(ModelError, match=r"D must return one logit per image .*got shape \(2, 2\)"):
        prepare(G, D, (1, 28, 28))


def test_a_half_conditional_pair_is_refused():
    m = example("cgan")
    D = nn.Sequential(nn.Linear(784, 1))
    with pytest.raises(ModelError, match="D's forward takes only x"):
        prepare(m.Generator(), D, (1, 28, 28), labels_given=True)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "x = 1\n",
            "defines neither build\\(\\) \\(returning \\(G, D\\)\\) nor the classes Generator and Discriminator",
        ),
        ("def build():\n    return 3\n", "build\\(\\) must give two torch.nn.Modules \\(G, D\\), got int"),
        ("raise RuntimeError('boom')\n", "running the file failed: RuntimeError: boom"),
    ],
)
def test_a_model_file_without_a_pair_is_refused(tmp_path, text, message):
    path = tmp_path / "mine.py"
    path.write_text(text)
    with pytest.raises(ModelError, match=message):
        load_file(path)


def test_the_command_refuses_bad_model_files_with_exit_2_before_training(tmp_path):
    bad_d = tmp_path / "bad_d.py"
    bad_d.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Linear(100, 784), nn.Tanh()), nn.Sequential(nn.Linear(784, 3))\n"
    )
    cases = [
        (tmp_path / "missing.py", "no such file"),
        (bad_d, "D must return one logit per image"),
        (os.path.join(EXAMPLES, "dcgan64.py"), "G's images have shape (3, 64, 64), the data's (1, 28, 28)"),
    ]
    for path, message in cases:
        out = tmp_path / f"out-{os.path.basename(path)}"
        result = cli("train", "--model", path, "--steps", "2", "--out", out, "--no-progress")
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not out.exists()  # nothing written: refused before training


def test_fastgan_options_of_its_own_models_are_refused_for_a_users(tmp_path):
    G, D = tutorial_mlp_relu()
    with pytest.raises(ConfigError, match="--g-widths shapes fastgan's own models"):
        fit(G, D, images(), tmp_path, g_widths=(8, 8))
    with pytest.raises(ConfigError, match="unknown option nope"):
        fit(G, D, images(), tmp_path, nope=1)


# -- training: fit and make_step ----------------------------------------------------------


def test_three_steps_of_fit_are_three_steps_of_the_unconverted_pair_with_logits_losses(tmp_path):
    """The same initial weights, batches and noise: fit's converted pair (fused ops, fastgan's
    Adam) ends where plain torch ends (BCE with logits on the original D minus its Sigmoid)."""
    m = example("mlp_gan")
    torch.manual_seed(0)
    G0, D0 = m.Generator(), m.Discriminator()
    data, batch, seed = images(), 64, 5
    G1, D1 = fit(copy.deepcopy(G0), copy.deepcopy(D0), data, tmp_path, batch_size=batch, seed=seed)

    G, D = copy.deepcopy(G0), copy.deepcopy(D0)
    D.model[7] = nn.Identity()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 1))
    noise = torch.Generator().manual_seed(seed + 2)
    x = data.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)
    for i in range(3):
        real = x[perm[i * batch : (i + 1) * batch]]
        z = torch.randn(batch, 100, generator=noise)
        fake = G(z)
        real_logits, fake_logits = D(real), D(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        logits = D(fake)
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    for mine, theirs in ((G1, G), (D1, D)):
        want = theirs.state_dict()
        assert mine.state_dict().keys() == want.keys()
        for k, v in mine.state_dict().items():
            torch.testing.assert_close(v, want[k], atol=2e-6, rtol=1e-5, msg=k)
    # and they moved: three steps, not none
    assert not torch.equal(G1.state_dict()["model.0.weight"], G0.state_dict()["model.0.weight"])


@pytest.mark.parametrize(
    "make, shape",
    [
        (tutorial_mlp_relu, (1, 28, 28)),
        (lambda: example("keras_mlp_gan").build(), (1, 28, 28)),
        (small_dcgan64, (3, 64, 64)),
    ],
    ids=["mlp-relu-flat", "keras-mlp-bn", "dcgan64-rgb"],
)
def test_make_step_trains_a_users_pair(make, shape):
    G, D = make()
    data = images(128, shape)
    step = make_step((G, D), 16, device="cpu", images=data)
    before = copy.deepcopy(step.G.state_dict())
    losses = torch.stack([step() for _ in range(3)])
    assert torch.isfinite(losses).all()
    assert any(not torch.equal(before[k], v) for k, v in step.G.state_dict().items())
    assert step.batches.images.shape[1:] == step.pair.sample_shape


def test_make_step_on_a_pair_without_data_makes_images_of_gs_size():
    step = make_step(small_dcgan64(), 8, device="cpu")
    assert tuple(step.batches.images.shape[1:]) == (3, 64, 64)
    assert torch.isfinite(step()).all()


def test_a_users_d_with_its_own_forward_runs_twice_not_once_on_real_and_fake():
    """A minibatch-statistics D mixes its samples: one pass over cat(real, fake) would change
    its math, and no module list shows it."""

    class MinibatchStd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(785, 1)

        def forward(self, x):
            x = x.flatten(1)
            return self.fc(torch.cat([x, x.std(0).mean().expand(x.shape[0], 1)], 1))

    assert not d_pass_mergeable(MinibatchStd())
    assert d_pass_mergeable(nn.Sequential(nn.Linear(784, 1)))


def test_fit_trains_a_64x64_rgb_dcgan_and_writes_its_grid(tmp_path):
    G, D = small_dcgan64()
    G1, D1 = fit(G, D, images(96, (3, 64, 64)), tmp_path, steps=4, batch_size=16)
    out = tmp_path / "run"
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 4 and state["config"].pair["image_shape"] == [3, 64, 64]
    assert state["config"].pair["latent_shape"] == [16, 1, 1]
    assert (out / "samples.png").exists()
    from matplotlib import image

    grid = image.imread(out / "samples.png")
    assert grid.shape[2] in (3, 4) and grid.shape[0] > 8 * 64  # 64 RGB images of 64x64, 2x scaled
    assert set(G1.state_dict()) == set(G.state_dict())


def test_fit_trains_a_conditional_pair_on_labelled_images(tmp_path):
    m = example("cgan")
    labels = torch.arange(128) % 10
    G, D = fit(m.Generator(), m.Discriminator(), images(128), tmp_path, labels=labels, steps=3)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["config"].pair["conditional"] is True
    with torch.no_grad():
        assert G.eval()(torch.randn(2, 100), torch.tensor([3, 4])).shape == (2, 1, 28, 28)


def test_fit_takes_a_dataset_as_torchvision_makes_it(tmp_path):
    """Items (ToTensor + Normalize((0.5,), (0.5,)) image, label): the same uint8 data as the tensor."""
    from fastgan.bench.tutorial import TutorialDataset
    from fastgan.fit import _images_and_labels

    data, labels = images(64)[:, 0], torch.arange(64) % 10
    x, y = _images_and_labels(TutorialDataset(data, labels), None)
    assert torch.equal(x, data[:, None]) and torch.equal(y, labels)
    G, D = tutorial_mlp_relu()
    fit(G, D, TutorialDataset(data, labels), tmp_path, steps=2)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


def test_fit_resumes_exactly(tmp_path):
    G0, D0 = tutorial_mlp_relu()
    data = images(128)
    G1, _ = fit(copy.deepcopy(G0), copy.deepcopy(D0), data, tmp_path / "a", steps=6)
    fit(copy.deepcopy(G0), copy.deepcopy(D0), data, tmp_path / "b", steps=3)
    G2, _ = fit(copy.deepcopy(G0), copy.deepcopy(D0), data, tmp_path / "b", steps=6, resume=True)
    for k, v in G1.state_dict().items():
        assert torch.equal(v, G2.state_dict()[k]), k


def test_fit_with_convert_false_trains_the_modules_as_written(tmp_path):
    G, D = tutorial_mlp_relu()
    G1, D1 = fit(G, D, images(), tmp_path, convert=False)
    assert G1 is G and type(G1[0]) is nn.Linear  # the same module, trained in place
    assert isinstance(D1[3], nn.Identity) and isinstance(D[3], nn.Sigmoid)  # D: a copy without its Sigmoid


# -- the command: --model FILE.py ----------------------------------------------------------


@pytest.mark.slow
def test_train_resume_sample_and_eval_a_model_file(tmp_path):
    model = tmp_path / "my_gan.py"
    shutil.copy(os.path.join(EXAMPLES, "mlp_gan.py"), model)
    out = tmp_path / "run"
    result = cli("train", "--model", model, "--steps", "6", "--batch-size", "32", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["config"].pair["file"] == str(model)
    # --resume finds the file again, from anywhere, and refuses it once it changed
    result = cli("train", "--out", out, "--resume", "--steps", "8", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 8
    model.write_text(model.read_text() + "\n# edited\n")
    result = cli("train", "--out", out, "--resume", "--steps", "10", "--no-progress")
    assert (
        result.returncode == 2 and "is not the model file" in result.stderr and "--allow-changed-model" in result.stderr
    )
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 8
    result = cli("train", "--out", out, "--resume", "--steps", "10", "--no-progress", "--allow-changed-model")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 10
    result = cli("sample", "--checkpoint", out / "checkpoint.pt", "--n", "16", "--out", tmp_path / "g.png")
    assert result.returncode == 0 and (tmp_path / "g.png").exists(), result.stderr


def test_a_checkpoint_of_a_pair_handed_to_fit_cannot_be_sampled_by_name(tmp_path):
    from fastgan.train import CheckpointError, sample

    G, D = tutorial_mlp_relu()
    fit(G, D, images(), tmp_path, steps=2)
    with pytest.raises(CheckpointError, match="the pair was handed to the trainer"):
        sample(tmp_path / "run" / "checkpoint.pt", n=4, out=str(tmp_path / "s.png"))


# -- CUDA: the converted pair in one graph -------------------------------------------------

cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]), reason="needs a GPU and the CUDA kernels"
)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(
    "make", [lambda: example("keras_mlp_gan").build(), small_dcgan64], ids=["keras-mlp-bn", "dcgan64"]
)
def test_a_converted_users_pair_in_one_cuda_graph_matches_its_eager_steps(make):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    G, D = make()  # the data: synthetic, of G's image size
    eager = make_step((copy.deepcopy(G), copy.deepcopy(D)), 32, "cuda", cuda_graph=False)
    graph = make_step((copy.deepcopy(G), copy.deepcopy(D)), 32, "cuda", cuda_graph=True)
    le = torch.stack([eager().clone() for _ in range(8)])
    lg = torch.stack([graph().clone() for _ in range(8)])
    torch.testing.assert_close(lg, le, rtol=1e-4, atol=1e-5)
    for (k, a), b in zip(eager.G.state_dict().items(), graph.G.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)


# -- fastgan bench train --model FILE.py ----------------------------------------------------


def test_bench_train_times_a_model_file_as_written_and_converted(monkeypatch, tmp_path, capsys):
    """Each implementation really runs the file's pair (a step of each is taken); the timer is
    stubbed so that the test does not time anything."""
    from fastgan.bench import train

    ran = []
    real_make = train.make

    def make(impl, model, *a, **k):
        step = real_make(impl, model, *a, **k)
        losses = step()
        ran.append((impl, type(step).__name__, float(torch.stack([torch.as_tensor(x).detach() for x in losses]).sum())))
        return step

    monkeypatch.setattr(train, "make", make)
    monkeypatch.setattr(train, "time_call", lambda *a, **k: 2.0)
    monkeypatch.setattr(train, "auto_iters", lambda *a, **k: 1)
    path = os.path.join(EXAMPLES, "mlp_gan.py")
    out = tmp_path / "bench.json"
    assert train.main(["--model", path, "--batch-size", "8", "--device", "cpu", "--json", str(out)]) == 0
    assert [r[0] for r in ran] == ["tutorial", "fastgan"]  # graph: CUDA only
    assert ran[1][1] == "_Step" and all(torch.isfinite(torch.tensor(r[2])) for r in ran)
    table = capsys.readouterr().out
    assert "| mlp_gan.py | 8 | 2.000 | 2.000 |" in table and "fastgan vs tutorial" in table
    import json

    assert json.loads(out.read_text())["rows"][0]["model"] == "mlp_gan.py"


def test_the_tutorial_loop_of_a_model_file_is_the_code_as_written():
    """As written: the file's own modules (no fused layer), its Sigmoid kept, BCELoss."""
    from fastgan.bench.train import user_tutorial_step
    from fastgan.convert import FusedLinear

    step = user_tutorial_step(os.path.join(EXAMPLES, "keras_mlp_gan.py"), 8, "cpu")
    d_loss, g_loss = step()
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    cells = step.loop.__closure__
    modules = [c.cell_contents for c in cells if isinstance(c.cell_contents, nn.Module)]
    assert modules and not any(isinstance(m, FusedLinear) for net in modules for m in net.modules())
    assert any(isinstance(m, nn.BCELoss) for m in modules)


def test_bench_train_refuses_a_missing_model_file(capsys):
    from fastgan.bench import train

    with pytest.raises(SystemExit) as e:
        train.main(["--model", "nope/missing.py", "--device", "cpu"])
    assert e.value.code == 2 and "--model nope/missing.py: no such file" in capsys.readouterr().err
