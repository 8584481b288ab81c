"""One rank of tests/test_distributed.py's multi-process checks, started by the test with
torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) on gloo.

    python tests/distributed_worker.py cli OUT [OUT ...] -- train ... [-- train ...]
        joins the process group, then runs each `fastgan train ...` in turn in it (the trainer
        uses the group it finds) and prints their exit codes ("codes: [...]"); every write under
        the OUT folders (Python's audit events) is recorded and printed ("writes: [...]").
    python tests/distributed_worker.py bn
        fastgan.nn.SyncBatchNorm in mlp-bn's and dcgan's networks against one process over the
        global batch (asserts; exit 1 on a mismatch).
    python tests/distributed_worker.py die STEP SIGNAL -- train ...
        `fastgan train ...`, where rank 1 sends itself SIGNAL (KILL: dies; STOP: hangs) at step STEP.
"""

import copy
import json
import os
import signal
import sys

import torch
import torch.distributed as dist

RANK, WORLD = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _split(args):
    groups, current = [], []
    for a in args:
        if a == "--":
            groups.append(current)
            current = []
        else:
            current.append(a)
    groups.append(current)
    return groups


def _record_writes(roots):
    """A list that fills with (event, path) for each file-system write under `roots`."""
    roots = [os.path.realpath(r) for r in roots]
    writes = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def under(path):
        try:
            path = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return any(path == r or path.startswith(r + os.sep) for r in roots)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & write_flags)
            if writing and isinstance(path, (str, bytes, os.PathLike)) and under(path):
                writes.append((event, os.fsdecode(path)))
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "tempfile.mkstemp"):
            if args and isinstance(args[0], (str, bytes, os.PathLike)) and under(args[0]):
                writes.append((event, os.fsdecode(args[0])))
        elif event == "os.rename":
            if any(isinstance(a, (str, bytes, os.PathLike)) and under(a) for a in args[:2]):
                writes.append((event, os.fsdecode(args[1])))

    sys.addaudithook(hook)
    return writes


def cli(args):
    from fastgan import cli as fastgan_cli

    roots, *commands = _split(args)
    writes = _record_writes(roots)  # on rank 0 too: the test sees that the records are not empty by design
    dist.init_process_group("gloo")
    codes = [fastgan_cli.main(argv) for argv in commands]
    dist.destroy_process_group()
    print("codes: " + json.dumps(codes), flush=True)
    print("writes: " + json.dumps(writes), flush=True)
    return 0


def die(args):
    from fastgan import cli as fastgan_cli
    from fastgan.train import trainer

    (at, name), argv = _split(args)
    if RANK == 1:
        train_one = trainer.Trainer._train_one

        def _train_one(self):
            if self.step == int(at):
                os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
            return train_one(self)

        trainer.Trainer._train_one = _train_one
    return fastgan_cli.main(argv)


def _check(name, mine, ref, atol=1e-5, rtol=1e-4):
    if not torch.allclose(mine, ref, atol=atol, rtol=rtol):
        raise AssertionError(f"rank {RANK}: {name} differs by {(mine - ref).abs().max().item():.3g}")


def _bn_case(name, net, x):
    """net (seeded, the same on every rank) as SyncBatchNorm on this rank's rows of x against
    one process's net on all of x: outputs, dx, parameter gradients (summed over the ranks),
    running statistics; and without sync, each rank's statistics its own."""
    from fastgan.nn import SyncBatchNorm, convert_sync_batchnorm

    ref = copy.deepcopy(net)
    sync = convert_sync_batchnorm(copy.deepcopy(net))
    local = copy.deepcopy(net)
    bns = [m for m in sync.modules() if isinstance(m, SyncBatchNorm)]
    slopes = [m.negative_slope for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and [m.negative_slope for m in bns] == slopes, (name, slopes)
    b = x.shape[0] // WORLD
    rows = slice(RANK * b, (RANK + 1) * b)
    w = torch.randn(copy.deepcopy(net)(x[:2]).shape[1:], generator=torch.Generator().manual_seed(7))

    def loss(out):  # a sum over rows: each rank's part adds up to the global one
        return (out * w).sum()

    xg = x.clone().requires_grad_(True)
    y_ref = ref(xg)
    loss(y_ref).backward()
    xs = x[rows].clone().requires_grad_(True)
    y = sync(xs)
    loss(y).backward()
    _check(f"{name} output", y.detach(), y_ref.detach()[rows])
    _check(f"{name} dx", xs.grad, xg.grad[rows])
    for (pname, p), p_ref in zip(sync.named_parameters(), ref.parameters()):
        grad = p.grad.clone()
        dist.all_reduce(grad)
        _check(f"{name} grad {pname}", grad, p_ref.grad, atol=1e-4)
    for (bname, t), t_ref in zip(sync.named_buffers(), ref.buffers()):
        _check(f"{name} buffer {bname}", t.float(), t_ref.float())
    # without sync: this rank's rows alone, so its statistics differ from the other rank's
    local(x[rows])
    mean = next(m.running_mean for m in local.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    other = [torch.empty_like(mean) for _ in range(WORLD)]
    dist.all_gather(other, mean.contiguous())
    assert not torch.allclose(other[0], other[1]), f"{name}: without sync, the ranks' running means agree"
    global_mean = next(m.running_mean for m in sync.modules() if isinstance(m, SyncBatchNorm))
    assert not torch.allclose(mean, global_mean), f"{name}: without sync, a rank's statistics are the global ones"


def bn(args):
    from fastgan.models import build

    dist.init_process_group("gloo")
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    G, _ = build("mlp-bn", latent_dim=16, g_widths=(32, 64, 128))
    _bn_case("mlp-bn G", G.train(), torch.randn(12, 16, generator=gen))
    torch.manual_seed(0)
    G, D = build("dcgan", latent_dim=16)
    _bn_case("dcgan G", G.train(), torch.randn(6, 16, generator=gen))
    _bn_case("dcgan D", D.train(), torch.rand(6, 1, 28, 28, generator=gen) * 2 - 1)
    dist.destroy_process_group()
    print("bn ok", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    case, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"cli": cli, "die": die, "bn": bn}[case](rest))
