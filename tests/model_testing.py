"""Shared pieces of the built-in models' step tests (test_family, test_srgan, test_lapgan,
test_stackgan, test_discogan): the plain-PyTorch side of each 'the step is plain PyTorch's' test,
each model's 'a run stopped and resumed is the run' and 'the CUDA-graph run is the eager run' checks."""

import torch
import torch.nn.functional as F

from fastgan.models import build
from fastgan.train import Trainer


def four_adams(name, **options):
    """fastgan's G and D and plain torch.nn's with the same weights, in float64, each with torch's Adam."""
    torch.manual_seed(0)
    G, D = build(name, **options)
    Gr, Dr = build(name, backend="torch", **options)
    Gr.load_state_dict(G.state_dict())
    Dr.load_state_dict(D.state_dict())
    nets = [n.double() for n in (G, D, Gr, Dr)]
    return nets, [torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n in nets]


def bce(logits, target):
    """BCE with logits against a constant target (1.0 real, 0.0 fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def update(opt, loss):
    """One plain-PyTorch optimizer step on loss: the reference side of a step test."""
    opt.zero_grad()
    loss.backward()
    opt.step()


def assert_same_step(losses, d_loss, g_loss, nets):
    """fastgan's step (losses: its (2,) [d_loss, g_loss]) gave the reference's losses and left its
    G and D with the reference nets' state_dicts (nets: G, D, Gr, Dr as four_adams makes them)."""
    G, D, Gr, Dr = nets
    torch.testing.assert_close(losses, torch.stack([d_loss, g_loss]).detach(), rtol=1e-10, atol=1e-12)
    for mine, ref in ((G, Gr), (D, Dr)):
        for (k, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=k)


def assert_trained_alike(run, other, rtol=1e-4, atol=1e-5):
    """Two (history, Trainer) runs gave the same losses and the same G and D state_dicts."""
    (history, trainer), (history_b, trainer_b) = run, other
    torch.testing.assert_close(history_b, history, rtol=rtol, atol=atol)
    for net in ("G", "D"):
        theirs = getattr(trainer_b, net).state_dict()
        for k, v in getattr(trainer, net).state_dict().items():
            torch.testing.assert_close(theirs[k], v, rtol=rtol, atol=atol, msg=(net, k))


def assert_graph_run_matches_eager(make_cfg, tmp_path, steps=12, **trainer_kw):
    """make_cfg(out, **options) -> a TrainConfig: its run on CUDA in one CUDA graph per step and
    eagerly, TF32 and cuDNN's autotuning off, train alike (assert_trained_alike)."""
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")
    flags += (torch.backends.cudnn, "deterministic"), (torch.backends.cudnn, "benchmark")
    saved = [getattr(obj, name) for obj, name in flags]
    for (obj, name), value in zip(flags, (False, False, True, False)):
        setattr(obj, name, value)
    try:
        runs = []
        for graph in (False, True):
            t = Trainer(
                make_cfg(tmp_path / f"graph{graph}", device="cuda", cuda_graph=graph, steps=steps), **trainer_kw
            )
            assert t.cuda_graph == graph
            runs.append((t.fit(), t))
        assert_trained_alike(*runs)
    finally:
        for (obj, name), value in zip(flags, saved):
            setattr(obj, name, value)


def assert_resumes_exactly(make_cfg, tmp_path, stop_at, **trainer_kw):
    """make_cfg(out, **options) -> a TrainConfig: its run straight through and its run stopped at
    step stop_at then resumed (--resume) end with equal G and D state_dicts, to the bit, and equal
    finite loss histories. Returns the two Trainers (whole, resumed)."""
    whole = Trainer(make_cfg(tmp_path / "whole"), **trainer_kw)
    whole.fit()
    Trainer(make_cfg(tmp_path / "resumed", steps=stop_at), **trainer_kw).fit()
    resumed = Trainer(make_cfg(tmp_path / "resumed"), resume=True, **trainer_kw)
    resumed.fit()
    for net in ("G", "D"):
        a, b = getattr(whole, net).state_dict(), getattr(resumed, net).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (net, k)
    assert torch.equal(whole.history, resumed.history) and torch.isfinite(whole.history).all()
    return whole, resumed
