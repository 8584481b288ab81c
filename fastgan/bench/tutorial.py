"""The tutorial's training code, as the benchmarks run it against fastgan: its step (sigmoid +
BCELoss, torch.optim.Adam, eager) and its per-sample dataset for a DataLoader.
`fastgan bench train`, `bench train --epoch` and `bench quality` all take it from here."""

import torch
from torch import nn

from fastgan.models import build


class _SigmoidD(nn.Module):
    """The tutorial's discriminator: logits through a sigmoid, for BCELoss."""

    def __init__(self, D):
        super().__init__()
        self.D = D

    def forward(self, x):
        return torch.sigmoid(self.D(x))


def tutorial_train_step(model, device, compile=False, seed=0):
    """The tutorial's step as a function of the real batch: fresh ones/zeros and noise each
    call, sigmoid + BCELoss, torch.optim.Adam, one D step then one G step."""
    torch.manual_seed(seed)
    G, D = build(model, backend="torch")
    return tutorial_loop(G.to(device), _SigmoidD(D).to(device), (G.latent_dim,), device, compile=compile)


def tutorial_loop(G, D, latent_shape, device, criterion=None, compile=False, labels=None):
    """The tutorials' training loop around a (G, D) pair as written: step(real) makes fresh
    ones/zeros and noise each call, criterion (default BCELoss on D's probabilities),
    torch.optim.Adam (lr 2e-4, betas (0.5, 0.999)), one D step then one G step on the same fake
    batch, eager (or under torch.compile). labels: given to a conditional pair each step."""
    from fastgan.models.user import forward

    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    if compile:
        G, D = torch.compile(G), torch.compile(D)
    criterion = criterion or nn.BCELoss()

    def step(real):
        b = real.shape[0]
        fake = forward(G, torch.randn(b, *latent_shape, device=device), labels)
        out_real = forward(D, real, labels)
        ones, zeros = torch.ones_like(out_real), torch.zeros_like(out_real)
        d_loss = criterion(out_real, ones) + criterion(forward(D, fake.detach(), labels), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = criterion(forward(D, fake, labels), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        return d_loss, g_loss

    step.G, step.D = G, D  # for measuring the generator (fastgan.bench.quality)
    return step


class TutorialDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST with ToTensor() + Normalize((0.5,), (0.5,)) returns per item."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i].to(torch.float32).div(255.0).unsqueeze(0)  # ToTensor
        return (x - 0.5) / 0.5, int(self.labels[i])  # Normalize


def sync(device):
    """Waits for the device's queued work (a timer's end must not count queued kernels as done)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
