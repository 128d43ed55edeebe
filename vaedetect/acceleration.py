"""Making a :class:`~vaedetect.networks.VAE` run fast without changing what it computes.

Two changes for the CPU, where convolutions take most of a training step (profile in
``docs/benchmarks/summary.md``):

- **channels-last memory format** lets oneDNN run convolutions without reordering every activation;
- **batch-norm folding** for inference: an evaluation-mode batch norm is an affine map per channel, so
  it merges into the weights and bias of the convolution before it.

Both keep results equal up to float32 rounding; what they gain is measured by the speed suite
(``benchmarks/speed.py``, docs/benchmarks/summary.md). ``torch.compile`` is not used: on the CPU it did not
speed up training, and its gain at scoring is paid for in compile time (docs/benchmarks/torch_compile.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval, fuse_linear_bn_weights

from .networks import GroupedLinear

# MPS supports channels-last only partly; CUDA and the CPU gain from it.
_CHANNELS_LAST_DEVICES = ("cpu", "cuda")


def use_channels_last(model: nn.Module, device) -> nn.Module:
    """Store an image network's weights channels-last where the device gains from it; in place.

    Activations follow the weights' format, so inputs may stay in the usual NCHW layout.
    """
    if getattr(model, "convolutional", False) and torch.device(device).type in _CHANNELS_LAST_DEVICES:
        model.to(memory_format=torch.channels_last)
    return model


def _fuse_grouped_bn(layer: GroupedLinear, norm: nn.BatchNorm1d) -> GroupedLinear:
    """``layer`` followed by the evaluation-mode ``norm`` as one grouped layer (a new module)."""
    groups, n_in, n_out = layer.weight.shape
    # the norm's channels are the layer's outputs, group after group: as one (groups * out, in) linear map
    # the pair is what torch folds for nn.Linear
    weight, bias = fuse_linear_bn_weights(layer.weight.transpose(1, 2).reshape(groups * n_out, n_in),
                                          layer.bias.reshape(groups * n_out), norm.running_mean, norm.running_var,
                                          norm.eps, norm.weight, norm.bias)
    fused = copy.deepcopy(layer)
    with torch.no_grad():
        fused.weight.copy_(weight.reshape(groups, n_out, n_in).transpose(1, 2))
        fused.bias.copy_(bias.reshape(groups, n_out))
    return fused


def _fold_sequential(sequence: nn.Sequential) -> None:
    """Merge each (conv or linear, batch norm) pair of ``sequence`` into one layer, in place."""
    for i in range(len(sequence) - 1):
        layer, norm = sequence[i], sequence[i + 1]
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
            sequence[i] = fuse_conv_bn_eval(layer, norm, transpose=isinstance(layer, nn.ConvTranspose2d))
        elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
            sequence[i] = fuse_linear_bn_eval(layer, norm)
        elif isinstance(layer, GroupedLinear) and isinstance(norm, nn.BatchNorm1d):
            sequence[i] = _fuse_grouped_bn(layer, norm)
        else:
            continue
        sequence[i + 1] = nn.Identity()


def inference_network(model: nn.Module) -> nn.Module:
    """An evaluation-mode copy of ``model`` with batch norms folded into the layers before them.

    The copy shares ``log_scale`` with ``model``, so recalibrating the decoder's scale reaches both.
    Its other weights are a snapshot: make a new copy after training ``model`` further.
    """
    shared = {id(model.log_scale): model.log_scale} if hasattr(model, "log_scale") else {}
    folded = copy.deepcopy(model.eval(), memo=shared)
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return folded.eval()
