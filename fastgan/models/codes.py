"""InfoGAN's latent codes (Chen et al. 2016, MNIST): the generator's input is the noise z, one
categorical code as a one-hot vector and continuous codes uniform in [-1, 1], joined in that
order. The codes are read back from that input (split), so a step that draws the input also
has the targets of the mutual-information loss, with no second tensor to carry."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentCodes:
    noise_dim: int = 62
    categories: int = 10
    continuous: int = 2

    @property
    def dim(self):
        """The generator's input width: noise, one-hot code, continuous codes."""
        return self.noise_dim + self.categories + self.continuous

    @property
    def q_outputs(self):
        """What the Q head predicts: the categorical code's logits, then the continuous codes' means."""
        return self.categories + self.continuous

    def attach(self, z, generator=None, categorical=None, continuous=None):
        """z (N, noise_dim) joined with codes: `categorical` (N,) int64 and `continuous`
        (N, continuous) where given, else drawn from `generator` on z's device (categorical
        uniform over the categories, then continuous uniform in [-1, 1]). No host sync."""
        n, device = z.shape[0], z.device
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise ValueError(f"z must be (N, {self.noise_dim}), got {tuple(z.shape)}")
        if categorical is None:
            categorical = torch.randint(0, self.categories, (n,), generator=generator, device=device)
        if continuous is None:
            continuous = torch.rand(n, self.continuous, generator=generator, device=device).mul_(2).sub_(1)
        # scatter, not F.one_hot: one_hot checks the range on the host, which a CUDA graph cannot hold
        one_hot = torch.zeros(n, self.categories, device=device, dtype=z.dtype)
        one_hot.scatter_(1, categorical.to(device).view(n, 1), 1.0)
        return torch.cat([z, one_hot, continuous.to(device, z.dtype)], dim=1)

    def split(self, latent):
        """(z, categorical code (N,) int64, continuous codes (N, continuous)) of a generator input."""
        d, k = self.noise_dim, self.categories
        return latent[:, :d], latent[:, d : d + k].argmax(1), latent[:, d + k :]
