"""Data-parallel training under torchrun: which rank this process is, its process group, and
the few collectives the trainer needs.

    torchrun --nproc-per-node 2 -m fastgan train --model dcgan --device cpu

torchrun starts one process per rank and tells each its place through the environment
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); Ranks.setup reads it and joins the
process group: gloo on the CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK). Without torchrun
(no WORLD_SIZE, or WORLD_SIZE 1) it is one rank and every collective is skipped: the same
trainer, step and checkpoint code runs either way.

Every collective has the group's timeout: a rank that died or hangs makes the others fail with
a DistributedError naming the rank, instead of waiting forever.
"""

import datetime
import os

import torch

from fastgan.train.config import ConfigError


class DistributedError(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or is unreachable."""


def _env_int(name, default=None):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None


def launched_rank():
    """This process's rank as torchrun (or an initialized process group) says, before joining
    the group: 0 without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0) if _env_int("WORLD_SIZE", 1) > 1 else 0


class Ranks:
    """This process's rank among world_size data-parallel ranks (1: no process group)."""

    def __init__(self, rank=0, world_size=1, local_rank=0, owned=False):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.owned = owned  # this object initialized the process group (and destroys it)

    @property
    def main(self):
        """Rank 0: the one that prints and writes the run folder."""
        return self.rank == 0

    @property
    def parallel(self):
        return self.world_size > 1

    @classmethod
    def setup(cls, device, timeout_s):
        """(Ranks, the device this rank trains on). Joins the process group that torchrun's
        environment describes (unless the caller initialized one already, which is then used
        as it is); `device` is --device's torch.device: a CUDA device becomes cuda:LOCAL_RANK.
        timeout_s: --dist-timeout, longer than any wait of a healthy run (rank 0's outputs and
        evaluations, which the others wait for at their next collective)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            local = _env_int("LOCAL_RANK", rank)
            return cls(rank, world, local), _rank_device(device, local, world)
        world = _env_int("WORLD_SIZE", 1)
        if world < 1:
            raise ConfigError(f"WORLD_SIZE must be at least 1, got {world}")
        if world == 1:
            return cls(), device
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 (torchrun): this torch was built without torch.distributed")
        rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        device = _rank_device(device, local, world)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=float(timeout_s))
        kw = dict(device_id=device) if device.type == "cuda" else {}
        try:
            dist.init_process_group(backend, timeout=timeout, **kw)
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"rank {rank} of {world}: cannot join the {backend} process group: {exc}") from exc
        return cls(rank, world, local, owned=True), device

    def close(self):
        """Leaves the process group if setup() joined it."""
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
        self.owned = False

    # -- collectives (no-ops on one rank) ------------------------------------------------
    def _failed(self, what, exc):
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: {what} failed: another rank died, hung longer than "
            f"--dist-timeout, or cannot be reached ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        )

    def all_reduce_(self, t, what="an all-reduce"):
        """Sums t over the ranks, in place."""
        if self.parallel:
            import torch.distributed as dist

            try:
                dist.all_reduce(t)
            except RuntimeError as exc:
                raise self._failed(what, exc) from exc
        return t

    def mean(self, t, what="averaging the losses"):
        """t averaged over the ranks (a new tensor)."""
        if not self.parallel:
            return t
        return self.all_reduce_(t.clone(), what).div_(self.world_size)

    def average_gradients(self, module):
        """Each of module's gradients averaged over the ranks: one all-reduce of all of them
        flattened (per dtype), inside the step before the optimizer (and any clipping), so
        that every rank steps with the gradient of the global batch's mean loss."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        for dtype in dict.fromkeys(g.dtype for g in grads):
            group = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in group])
            self.all_reduce_(flat, "averaging the gradients").div_(self.world_size)
            for g, chunk in zip(group, flat.split([g.numel() for g in group])):
                g.copy_(chunk.view_as(g))

    def broadcast_state(self, *modules):
        """Every rank takes rank 0's parameters and buffers (one broadcast per tensor), so that
        all start from the same weights however their modules were made."""
        if not self.parallel:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for module in modules:
                for t in list(module.parameters()) + list(module.buffers()):
                    flat = t.data if t.is_contiguous() else t.data.contiguous()  # (channels_last weights)
                    try:
                        dist.broadcast(flat, 0)
                    except RuntimeError as exc:
                        raise self._failed("sharing rank 0's weights", exc) from exc
                    if flat is not t.data:
                        t.data.copy_(flat)

    def shard(self, t):
        """This rank's rows of a tensor holding the global batch (world_size equal parts in rank
        order): rank r takes rows [r*b, (r+1)*b)."""
        if not self.parallel:
            return t
        b = t.shape[0] // self.world_size
        return t.narrow(0, self.rank * b, b)


def _rank_device(device, local_rank, world):
    """The device of rank `local_rank` on its machine: cuda (or auto's cuda) -> cuda:LOCAL_RANK."""
    if device.type != "cuda" or world == 1:
        return device
    if device.index is not None and device.index != local_rank:
        raise ConfigError(
            f"--device {device} under torchrun: each rank trains on cuda:LOCAL_RANK (this one cuda:{local_rank}); "
            "give --device cuda"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank}: this machine has {count} CUDA device{'s' * (count != 1)}; "
            "start at most that many processes per node (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


__all__ = ["Ranks", "DistributedError", "launched_rank"]
