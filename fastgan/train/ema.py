"""An exponential moving average of the generator's weights (`--ema DECAY`): the cheapest large
gain in sample quality there is (Karras et al., Yazici et al. 2019).

    ema = GeneratorEMA(G, decay=0.999)
    ...; opt_g.step(); ema.update()        # inside the captured step: two multi-tensor launches
    images = ema.module(z)                 # sample from the average

update() is one torch._foreach_lerp_ over all the parameters (multi-tensor kernels on CUDA,
no host sync: it is captured in the step's CUDA graph) and one _foreach_copy_ of the buffers
(batch-norm running statistics, spectral norm's power-iteration vectors), which are G's own,
not averaged.
"""

import copy

import torch


class GeneratorEMA:
    def __init__(self, G, decay):
        self.decay = float(decay)
        self.module = copy.deepcopy(G).eval().requires_grad_(False)
        self._params = list(G.parameters())
        self._avg = list(self.module.parameters())
        self._buffers = list(G.buffers())
        self._avg_buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self):
        """avg += (1 - decay) * (G - avg); buffers copied from G."""
        torch._foreach_lerp_(self._avg, self._params, 1.0 - self.decay)
        if self._buffers:
            torch._foreach_copy_(self._avg_buffers, self._buffers)

    @torch.no_grad()
    def reset(self):
        """The average := G (at --ema-start)."""
        torch._foreach_copy_(self._avg, self._params)
        if self._buffers:
            torch._foreach_copy_(self._avg_buffers, self._buffers)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)
