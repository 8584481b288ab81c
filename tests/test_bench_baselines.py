"""The benchmark baselines run fastgan's algorithm: the tutorial step makes the same updates as
make_step from the same weights, batches and noise (3 steps, losses and updates compared), and
the tutorial epoch's DataLoader shuffles, drops the last partial batch and scales as torchvision."""

import pytest
import torch

from fastgan.bench import train as bench_train
from fastgan.train.step import make_step


def _tutorial_vs_fastgan(model, steps=3, batch_size=8, seed=0):
    fg = make_step(model, batch_size, "cpu", seed=seed)
    tut = bench_train.tutorial_train_step(model, "cpu", seed=seed)
    fg.initial = {
        **{"G." + k: v.clone() for k, v in fg.G.state_dict().items()},
        **{"D." + k: v.clone() for k, v in fg.D.state_dict().items()},
    }
    # the same initial weights (same seed, same layer order in both backends)
    for (n, a), b in zip(fg.G.state_dict().items(), tut.G.state_dict().values()):
        assert torch.equal(a, b), n
    for (n, a), b in zip(fg.D.state_dict().items(), tut.D.D.state_dict().values()):
        assert torch.equal(a, b), n
    b = fg.batches
    reals = [b.images[b.perm[i]].clone() for i in range(steps)]
    # the tutorial draws its noise from the global RNG: give it the stream fastgan's step draws from
    noise_state = fg.noise_generator.get_state()
    fg_losses = [fg() for _ in range(steps)]
    with torch.random.fork_rng():
        torch.set_rng_state(noise_state)
        tut_losses = [torch.stack([l.detach() for l in tut(r)]) for r in reals]
    return fg, tut, fg_losses, tut_losses


def _states(fg, tut):
    """(name, initial, fastgan's, the tutorial's) for every floating-point tensor of G and D."""
    ours = {
        **{"G." + k: v for k, v in fg.G.state_dict().items()},
        **{"D." + k: v for k, v in fg.D.state_dict().items()},
    }
    theirs = list(tut.G.state_dict().values()) + list(tut.D.D.state_dict().values())
    return [(n, fg.initial[n], a, b) for (n, a), b in zip(ours.items(), theirs) if a.is_floating_point()]


@pytest.mark.parametrize("model", ["mlp", "mlp-bn", "dcgan"])
def test_tutorial_step_is_fastgans_algorithm(model):
    """The benchmark's baseline runs the same algorithm as fastgan's step: from the same
    weights, batches and noise, three steps give the same losses and the same updates (up to
    float rounding: Adam's first steps are about lr * sign(grad), so an element whose gradient
    is ~0 may move either way; compare each tensor's whole update)."""
    fg, tut, fg_losses, tut_losses = _tutorial_vs_fastgan(model)
    for a, b in zip(fg_losses, tut_losses):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for name, w0, a, b in _states(fg, tut):
        da, db = a - w0, b - w0
        assert (da - db).norm() <= 0.02 * da.norm() + 1e-7, (name, ((da - db).norm() / da.norm()).item())


def test_tutorial_epoch_is_torchvisions_loader(monkeypatch):
    """The tutorial's epoch: shuffled batches of 64 (the last incomplete one dropped), each
    image as ToTensor + Normalize((0.5,), (0.5,)) give it: fastgan's [-1, 1] scaling."""
    from fastgan.bench import epoch
    from fastgan.data.loader import scale_images

    n = 64 * 3 + 10
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(n) % 256  # image i is identified by its first pixel
    images[:, 1:, :] = torch.randint(0, 256, (n, 27, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.arange(n) % 10
    seen = []

    def fake_train_step(model, device, compile=False, seed=0):
        return lambda real: seen.append(real.clone())

    monkeypatch.setattr(epoch, "tutorial_train_step", fake_train_step)
    torch.manual_seed(0)
    seconds, steps = epoch.tutorial_epoch("mlp", images, labels, "cpu")
    batches = seen[1:]  # the first is the warm-up
    assert steps == len(batches) == 3 and seconds >= 0
    assert all(b.shape == (64, 1, 28, 28) and b.dtype == torch.float32 for b in batches)
    assert all(b.min() >= -1 and b.max() <= 1 for b in batches)
    order = torch.cat([((b[:, 0, 0, 0] + 1) / 2 * 255).round().long() for b in batches])
    assert len(set(order.tolist())) == 192  # no image twice in an epoch
    assert not torch.equal(order, torch.arange(192))  # shuffled
    expected = scale_images(images[order].unsqueeze(1))
    torch.testing.assert_close(torch.cat(batches), expected, rtol=0, atol=1e-6)


# -- files and checkpoints ------------------------------------------------------------------
