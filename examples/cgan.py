"""A conditional MLP GAN as the tutorials write it: the label embedded (nn.Embedding) and
concatenated to z in G and to the flat image in D; G ReLU, D LeakyReLU(0.2) with Dropout and a
Sigmoid.

    fastgan train --model examples/cgan.py --epochs 5
"""

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, latent_dim=100, num_classes=10):
        super().__init__()
        self.label_emb = nn.Embedding(num_classes, num_classes)
        self.model = nn.Sequential(
            nn.Linear(latent_dim + num_classes, 256),
            nn.ReLU(),
            nn.Linear(256, 512),
            nn.ReLU(),
            nn.Linear(512, 784),
            nn.Tanh(),
        )

    def forward(self, z, labels):
        return self.model(torch.cat([z, self.label_emb(labels)], 1)).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.label_emb = nn.Embedding(num_classes, num_classes)
        self.model = nn.Sequential(
            nn.Linear(784 + num_classes, 512),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(256, 1),
            nn.Sigmoid(),
        )

    def forward(self, x, labels):
        return self.model(torch.cat([x.view(x.size(0), -1), self.label_emb(labels)], 1))
