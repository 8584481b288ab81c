"""The tutorial MLP GAN, as the tutorials write it (G 100-256-512-1024-784 with LeakyReLU 0.2
and Tanh, D 784-1024-512-256-1 with LeakyReLU 0.2 and Sigmoid, trained with BCELoss): plain
torch.nn, nothing of fastgan's.

    fastgan train --model examples/mlp_gan.py --epochs 5
    fastgan bench train --model examples/mlp_gan.py
"""

from torch import nn


class Generator(nn.Module):
    def __init__(self, latent_dim=100):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(latent_dim, 256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 512),
            nn.LeakyReLU(0.2),
            nn.Linear(512, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, 784),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.model(z).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, 512),
            nn.LeakyReLU(0.2),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.model(x.view(x.size(0), -1))
