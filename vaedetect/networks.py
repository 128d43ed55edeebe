"""The torch networks: SharpVAE's convolutional encoder/decoder, an MLP for tabular data, the VAE.

Read top to bottom: small blocks, then encoders and decoders, then :class:`VAE`, which only computes.
Noise for the reparameterisation comes in as an argument, so randomness stays with the caller.

The convolutional networks follow the SharpVAE tutorial: a 3x3 stem, stride-2 stages (4x4 conv, batch
norm, activation, residual block) with channels doubling from ``base_channels``, mean and log-variance
heads, and a mirrored transposed-convolution decoder ending in a 3x3 conv pair. The decoder returns
pre-activation outputs ("logits"); ``tanh`` of them is the reconstruction in ``[-1, 1]``, and twice
them are the Bernoulli logits, since ``sigmoid(2h) = (tanh(h) + 1) / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# exp(30) is 1e13: the widest posterior a score meets stays finite through the decoder and the KL
LOGVAR_LIMIT = 30.0


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of a :class:`VAE`; every field maps to a ``VAEDetector`` parameter."""

    latent_dim: int = 16
    base_channels: int = 32
    n_stages: int = 3
    residual: bool = True
    spatial_latent: bool = False
    skip_connections: bool = False
    activation: str = "leaky_relu"
    # tabular only: independent MLP VAEs side by side in one network (VAEDetector's n_estimators)
    members: int = 1


def _activation(name: str) -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True) if name == "leaky_relu" else nn.ReLU(inplace=True)


class ResBlock(nn.Module):
    """Two 3x3 conv + batch norm with an identity shortcut."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            _activation(activation),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _stage(conv: nn.Module, out_channels: int, residual: bool, activation: str) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(out_channels), _activation(activation)]
    if residual:
        layers.append(ResBlock(out_channels, activation))
    return nn.Sequential(*layers)


def stage_channels(config: NetworkConfig) -> list[int]:
    """Output channels of each encoder stage: ``base, 2 base, 4 base, ...``."""
    return [config.base_channels * 2**i for i in range(config.n_stages)]


class ConvEncoder(nn.Module):
    """Image -> (mean, log-variance) of q(z|x), plus the feature maps the U-Net skips need."""

    def __init__(self, in_channels: int, bottom_hw: tuple[int, int], config: NetworkConfig):
        super().__init__()
        channels = stage_channels(config)
        base = config.base_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base, 3, padding=1, bias=False),
            nn.BatchNorm2d(base),
            _activation(config.activation),
        )
        self.stages = nn.ModuleList(
            _stage(
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                c_out,
                config.residual,
                config.activation,
            )
            for c_in, c_out in zip([base, *channels[:-1]], channels)
        )
        top = channels[-1]
        if config.spatial_latent:
            self.mean_head = nn.Conv2d(top, config.latent_dim, 1)
            self.logvar_head = nn.Conv2d(top, config.latent_dim, 1)
        else:
            flat = top * bottom_hw[0] * bottom_hw[1]
            self.mean_head = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.latent_dim))
            self.logvar_head = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.latent_dim))

    def forward(self, x: torch.Tensor):
        h = self.stem(x)  # (B, C, H, W) -> (B, base, H, W)
        features = [h]
        for stage in self.stages:
            h = stage(h)  # halves H and W
            features.append(h)
        # (B, top, H / 2^n, W / 2^n) -> (B, latent_dim) or (B, latent_dim, H / 2^n, W / 2^n)
        return self.mean_head(h), self.logvar_head(h), features


class ConvDecoder(nn.Module):
    """Latent code -> per-pixel logits; with ``skip_connections`` it also concatenates encoder maps."""

    def __init__(self, out_channels: int, bottom_hw: tuple[int, int], config: NetworkConfig):
        super().__init__()
        channels = stage_channels(config)
        base, top = config.base_channels, channels[-1]
        self.skips = config.skip_connections
        self.bottom_hw = bottom_hw
        if config.spatial_latent:
            self.project = nn.Sequential(nn.Conv2d(config.latent_dim, top, 1), _activation(config.activation))
        else:
            self.project = nn.Sequential(
                nn.Linear(config.latent_dim, top * bottom_hw[0] * bottom_hw[1]),
                _activation(config.activation),
            )
        widen = 2 if self.skips else 1  # concatenated encoder maps double the input channels
        outs = [*channels[-2::-1], base]
        self.stages = nn.ModuleList(
            _stage(
                nn.ConvTranspose2d(widen * c_in, c_out, 4, stride=2, padding=1, bias=False),
                c_out,
                config.residual,
                config.activation,
            )
            for c_in, c_out in zip(channels[::-1], outs)
        )
        self.head = nn.Sequential(
            nn.Conv2d(widen * base, base, 3, padding=1, bias=False),
            nn.BatchNorm2d(base),
            _activation(config.activation),
            nn.Conv2d(base, out_channels, 3, padding=1),
        )
        self.top = top

    def forward(self, z: torch.Tensor, features: list[torch.Tensor] | None = None) -> torch.Tensor:
        h = self.project(z)
        if h.ndim == 2:
            h = h.view(-1, self.top, *self.bottom_hw)  # (B, top * h * w) -> (B, top, h, w)
        for i, stage in enumerate(self.stages):
            if self.skips:
                h = torch.cat([h, features[-1 - i]], dim=1)
            h = stage(h)  # doubles H and W
        if self.skips:
            h = torch.cat([h, features[0]], dim=1)
        return self.head(h)  # (B, C, H, W) logits


def members_first(x: torch.Tensor, members: int) -> torch.Tensor:
    """``(..., members * d)`` side by side -> ``(members, ..., d)``, one block per member (a view)."""
    return x if members == 1 else x.unflatten(-1, (members, -1)).movedim(-2, 0)


def members_last(x: torch.Tensor, members: int) -> torch.Tensor:
    """``(members, ..., d)`` -> ``(..., members * d)``, the members' blocks side by side."""
    return x if members == 1 else x.movedim(0, -2).flatten(-2)


class GroupedLinear(nn.Module):
    """``groups`` independent linear maps, one per member: ``(groups, B, in) -> (groups, B, out)``.

    Each is initialised as an ``nn.Linear(in_features, out_features)`` would be, and all of them run as one
    batched matrix product on member-major activations (no member sees another's).
    """

    def __init__(self, in_features: int, out_features: int, groups: int):
        super().__init__()
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation, per group
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


class GroupedBatchNorm(nn.BatchNorm1d):
    """Batch norm of member-major activations ``(groups, B, d)``: one channel per member and feature,
    ``groups * d`` in all, in the order of :func:`members_last`; folded into the layer before it for inference."""

    def __init__(self, num_features: int, groups: int):
        super().__init__(groups * num_features)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return members_first(super().forward(members_last(x, self.groups)), self.groups)


def _linear(d_in: int, d_out: int, members: int) -> nn.Module:
    """A layer of ``members`` MLPs side by side: an ``nn.Linear`` for one, a :class:`GroupedLinear` for several."""
    return nn.Linear(d_in, d_out) if members == 1 else GroupedLinear(d_in, d_out, members)


def _norm(d: int, members: int) -> nn.Module:
    return nn.BatchNorm1d(d) if members == 1 else GroupedBatchNorm(d, members)


class MLPEncoder(nn.Module):
    """Tabular rows -> (mean, log-variance); hidden widths shrink towards the latent code.

    With ``config.members > 1`` it is that many encoders side by side, ``(B, members * d) -> (B, members *
    latent)``: member ``k`` reads the ``k``-th block of the input and writes the ``k``-th block of the code.
    Inside, activations are member-major, ``(members, B, width)``, so that every layer is one batched product.
    """

    def __init__(self, n_features: int, hidden: list[int], config: NetworkConfig):
        super().__init__()
        self.members = members = config.members
        layers = []
        for d_in, d_out in zip([n_features, *hidden[:-1]], hidden):
            layers += [_linear(d_in, d_out, members), _norm(d_out, members), _activation(config.activation)]
        self.body = nn.Sequential(*layers)
        self.mean_head = _linear(hidden[-1], config.latent_dim, members)
        self.logvar_head = _linear(hidden[-1], config.latent_dim, members)

    def forward(self, x: torch.Tensor):
        h = self.body(members_first(x, self.members))  # -> (members, B, hidden[-1])
        return members_last(self.mean_head(h), self.members), members_last(self.logvar_head(h), self.members), []


class MLPDecoder(nn.Module):
    """Latent code -> tabular rows (identity output: the data are standardised, not bounded).

    With ``config.members > 1`` it is that many decoders side by side: member ``k`` decodes the ``k``-th
    block of the code into the ``k``-th copy of the row, ``(B, members * latent) -> (B, members * d)``.
    """

    def __init__(self, n_features: int, hidden: list[int], config: NetworkConfig):
        super().__init__()
        self.members = members = config.members
        layers = []
        widths = hidden[::-1]
        for d_in, d_out in zip([config.latent_dim, *widths[:-1]], widths):
            layers += [_linear(d_in, d_out, members), _norm(d_out, members), _activation(config.activation)]
        self.body = nn.Sequential(*layers, _linear(widths[-1], n_features, members))

    def forward(self, z: torch.Tensor, features=None) -> torch.Tensor:
        # (B, members * latent_dim) -> (B, members * d)
        return members_last(self.body(members_first(z, self.members)), self.members)


class VAE(nn.Module):
    """A variational autoencoder: encoder, decoder and the decoder's learned log-scale.

    Parameters
    ----------
    data_shape : tuple of int
        ``(C, H, W)`` for images (convolutional networks) or ``(d,)`` for tabular rows (MLP).
    config : NetworkConfig
        The architecture.

    Notes
    -----
    Images whose sides are not multiples of ``2 ** n_stages`` are zero-padded (zero is mid-grey in
    ``[-1, 1]``) before the encoder and the decoder's output is cropped back, so every method sees and
    returns the original size. ``log_scale`` is the per-channel (per-feature) log standard deviation of
    a calibrated Gaussian or Laplace decoder (Rybkin et al., 2021, https://arxiv.org/abs/2006.13202).

    A tabular VAE of ``config.members`` members is that many independent VAEs in one network: its inputs,
    latent codes, outputs and ``log_scale`` hold one block per member side by side, and every bound and
    loss is the sum of the members' own. Rows of ``d`` features are copied to every member
    (:meth:`stack_members`); training passes ``members * d`` columns instead, a row of its own for each
    member.
    """

    def __init__(self, data_shape: tuple[int, ...], config: NetworkConfig):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.config = config
        # convolutional for images (C, H, W), whose outputs are 8-bit pixel values in [-1, 1]; an MLP for rows
        self.convolutional = len(self.data_shape) == 3
        self.members = config.members
        if self.convolutional and self.members != 1:
            raise ValueError(f"Members side by side are for tabular networks; got members={self.members} for images.")
        if self.convolutional:
            channels, height, width = self.data_shape
            factor = 2**config.n_stages
            padded = (math.ceil(height / factor) * factor, math.ceil(width / factor) * factor)
            pad_h, pad_w = padded[0] - height, padded[1] - width
            # F.pad order: (left, right, top, bottom)
            self.padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            bottom = (padded[0] // factor, padded[1] // factor)
            self.encoder = ConvEncoder(channels, bottom, config)
            self.decoder = ConvDecoder(channels, bottom, config)
            self.log_scale = nn.Parameter(torch.zeros(channels, 1, 1))
            self.latent_shape = (config.latent_dim, *bottom) if config.spatial_latent else (config.latent_dim,)
        else:
            hidden = stage_channels(config)[::-1]
            self.encoder = MLPEncoder(self.data_shape[0], hidden, config)
            self.decoder = MLPDecoder(self.data_shape[0], hidden, config)
            self.log_scale = nn.Parameter(torch.zeros(self.members * self.data_shape[0]))
            self.latent_shape = (self.members * config.latent_dim,)

    @property
    def bounded(self) -> bool:
        """Whether the outputs are 8-bit pixel values in ``[-1, 1]``, whose likelihood is that of a pixel's bin
        (``bounded`` of :func:`vaedetect.losses.log_likelihood`)."""
        return self.convolutional

    @property
    def can_generate(self) -> bool:
        """False when U-Net skips let the decoder bypass the latent code."""
        return not (self.convolutional and self.config.skip_connections)

    def stack_members(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's input: rows ``(B, d)`` copied once per member, ``(B, members * d)``; inputs that
        already hold a block per member, and the inputs of a single network, pass unchanged."""
        if self.members == 1 or x.shape[-1] == self.members * self.data_shape[0]:
            return x
        return x.repeat(*([1] * (x.ndim - 1)), self.members)

    def decoder_target(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder's output models for the input ``x``: each member's own input."""
        return self.stack_members(x)

    def average_members(self, values: torch.Tensor) -> torch.Tensor:
        """Decoder-side ``values`` ``(..., members * d)`` -> the members' mean ``(..., d)``; unchanged for one."""
        if self.members == 1:
            return values
        return values.unflatten(-1, (self.members, -1)).mean(-2)

    def encode(self, x: torch.Tensor):
        """Return ``(mean, logvar, features)`` of q(z|x); ``features`` feed the U-Net skips.

        The log-variance is clipped to ``[-LOGVAR_LIMIT, LOGVAR_LIMIT]``: an input far outside the training data
        would otherwise get a variance whose exponential overflows, and a score of -inf instead of a finite, very
        low one that still ranks by how far out it lies. Trained posteriors lie far inside these bounds.
        """
        if self.convolutional and any(self.padding):
            x = F.pad(x, self.padding)
        mean, logvar, features = self.encoder(x if self.convolutional else self.stack_members(x))
        return mean, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT), features

    @staticmethod
    def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``z = mean + std * eps``; ``eps`` may carry leading sample axes, e.g. (K, B, latent)."""
        return mean + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor, features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Return the decoder's logits for ``z``, cropped to the data shape."""
        if self.config.skip_connections and self.convolutional and features is None:
            raise ValueError(
                "This VAE was built with skip_connections=True: its decoder needs the encoder's "
                "feature maps of an input image and cannot decode a latent code alone."
            )
        out = self.decoder(z, features)
        if self.convolutional and any(self.padding):
            left, right, top, bottom = self.padding
            out = out[..., top : out.shape[-2] - bottom, left : out.shape[-1] - right]
        return out

    def output_mean(self, logits: torch.Tensor) -> torch.Tensor:
        """Reconstruction in data space: ``tanh`` for images in ``[-1, 1]``, identity for tabular."""
        return torch.tanh(logits) if self.convolutional else logits

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """One stochastic pass: ``(logits, mean, logvar)`` with ``z = mean + std * eps``."""
        mean, logvar, features = self.encode(x)
        z = self.reparameterize(mean, logvar, eps)
        return self.decode(z, features), mean, logvar
