"""The Keras-style MLP GAN as its PyTorch ports write it: G Dense -> LeakyReLU(0.2) ->
BatchNorm (momentum 0.8 in Keras, i.e. 0.2 in torch) three times, then Tanh; D a plain MLP with
LeakyReLU and a Sigmoid. G makes flat images (784 values), which D takes as they are.

    fastgan train --model examples/keras_mlp_gan.py --epochs 5
"""

from torch import nn


def block(n_in, n_out):
    return [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2, inplace=True), nn.BatchNorm1d(n_out, momentum=0.2)]


def build(latent_dim=100):
    G = nn.Sequential(*block(latent_dim, 256), *block(256, 512), *block(512, 1024), nn.Linear(1024, 784), nn.Tanh())
    D = nn.Sequential(
        nn.Linear(784, 512),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(256, 1),
        nn.Sigmoid(),
    )
    return G, D
