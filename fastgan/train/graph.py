"""Run a whole training step as one CUDA graph.

At MNIST sizes a GAN step is hundreds of kernels of a few microseconds each, and launching
them one by one from Python costs more than running them. Captured once and replayed, the
step costs one launch from the host. What makes a step capturable: every tensor it reads or
writes lives at a fixed address (the batch is gathered inside the step from a device-resident
dataset through a device index, the noise drawn inside it), no host synchronization inside,
and optimizers with `capturable=True`.
"""

import torch


class GraphedStep:
    """step() runs `fn` once; the first `warmup` calls run it eagerly on a side stream
    (lazy initialization: optimizer state, cuBLAS workspaces, autograd streams), the next one
    captures it into a CUDA graph, and every call from then on replays the graph.

    Each call is exactly one real step, so a caller counts steps the same with or without
    the graph. `fn` returns tensors; with the graph they are the graph's static outputs,
    overwritten by the next call (copy them if they must outlive it).
    generators: torch.Generator objects (besides the default CUDA one) that `fn` draws from;
    their state advances on each replay as it would eagerly.
    """

    def __init__(self, fn, warmup=3, generators=()):
        if warmup < 1:
            raise ValueError(f"GraphedStep: warmup must be >= 1, got {warmup}")
        self.fn = fn
        self.warmup = int(warmup)
        self.generators = tuple(generators)
        self.calls = 0
        self.graph = None
        self.outputs = None
        self._side = torch.cuda.Stream()

    def __call__(self):
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.calls < self.warmup:
            self.calls += 1
            self._side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._side):
                out = self.fn()
            torch.cuda.current_stream().wait_stream(self._side)
            return out
        graph = torch.cuda.CUDAGraph()
        for gen in self.generators:
            graph.register_generator_state(gen)
        with torch.cuda.graph(graph):
            self.outputs = self.fn()
        self.graph = graph
        self.calls += 1
        graph.replay()  # capture records the work without running it
        return self.outputs
