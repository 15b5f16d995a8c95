"""The non-local block (Wang et al. 2018) with mmcv's NonLocal2d parameter layout and semantics.

    theta, phi, g = 1x1 convs (with bias) of x, C -> C' = C / reduction
    embedded_gaussian: y = softmax(theta^T phi * s) g, s = 1/sqrt(C') when use_scale else 1
    dot_product:       y = (theta^T phi / N) g,  N = number of positions
    out = x + BN(conv1x1 C' -> C, no bias)(y)

``impl="sdpa"`` (the class's default; the recipes' ``fast`` setting) never builds the N x N
attention matrix: embedded_gaussian goes through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels), and
dot_product, having no softmax, is evaluated as theta (phi^T g) / N, which is exactly associative.
At a 1024x2048 input N = 128*256 = 32768, so the matrix would be 4 GiB per image in fp32.
``impl="explicit"`` is mmcv's arithmetic, operation for operation: theta^T phi, divided in place by
sqrt(C'), softmax, times g. It is what the recipes run by default (docs/FIDELITY.md). Without
autograd and above ``EXPLICIT_FULL_MATRIX_BYTES`` it computes the same matrix in blocks of query rows
(each row of a matrix product and of a softmax is computed from that row's inputs alone, so every
element is the same arithmetic); with autograd it builds the whole matrix, as mmcv does, so that the
gradients' sums keep mmcv's order too.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.layers import ConvBlock, NormLayer, constant_norm_init_, kaiming_init_, normal_init_

Mode = Literal["embedded_gaussian", "dot_product"]
Impl = Literal["sdpa", "explicit"]

# Largest attention matrix the explicit path builds whole when no gradient is needed (256 MiB: an
# N of 8192, a 512x1024 crop at stride 8); above it, blocks of query rows of at most this size.
EXPLICIT_FULL_MATRIX_BYTES = 256 * 2**20


class NonLocal2d(nn.Module):
    def __init__(
        self,
        in_channels: int,
        reduction: int = 2,
        use_scale: bool = True,
        mode: Mode = "embedded_gaussian",
        impl: Impl = "sdpa",
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if mode not in ("embedded_gaussian", "dot_product"):
            raise ValueError(f"NonLocal2d mode must be embedded_gaussian or dot_product, got {mode!r}")
        if impl not in ("sdpa", "explicit"):
            raise ValueError(f"NonLocal2d impl must be sdpa or explicit, got {impl!r}")
        self.in_channels = in_channels
        self.inter_channels = in_channels // reduction
        self.use_scale = use_scale
        self.mode = mode
        self.impl = impl
        self.g = ConvBlock(in_channels, self.inter_channels, 1)
        self.theta = ConvBlock(in_channels, self.inter_channels, 1)
        self.phi = ConvBlock(in_channels, self.inter_channels, 1)
        self.conv_out = ConvBlock(self.inter_channels, in_channels, 1, norm_layer=norm_layer)
        self.init_weights()

    def init_weights(self, std: float = 0.01) -> None:
        """mmcv's init: N(0, 0.01) for g/theta/phi; conv_out keeps ConvModule's Kaiming init and
        its norm starts at scale 0, so the block is the identity until trained."""
        for block in (self.g, self.theta, self.phi):
            normal_init_(block.conv, std)
        kaiming_init_(self.conv_out.conv)
        constant_norm_init_(self.conv_out.bn, 0.0)

    def attend(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """y for (B, N, C') queries ``theta``, keys ``phi`` and values ``g``; returns (B, N, C')."""
        n_keys = phi.shape[-2]
        if self.mode == "embedded_gaussian":
            # use_scale=False means no scaling at all: pass 1.0, not None (None means 1/sqrt(C')).
            scale = self.inter_channels**-0.5 if self.use_scale else 1.0
            if self.impl == "sdpa":
                # A (B, 1 head, N, C') layout: with 3-D inputs torch dispatches to its "math" kernel,
                # which builds the N x N matrix; 4-D inputs reach the flash / memory-efficient ones.
                # The fused kernels also need a unit stride along the last (channel) dimension.
                q, k, v = (t.contiguous().unsqueeze(1) for t in (theta, phi, g))
                return F.scaled_dot_product_attention(q, k, v, scale=scale).squeeze(1)
            return self.explicit_attention(theta, phi, g)
        # dot_product: no softmax, so (theta phi^T) g == theta (phi^T g); the right-hand form is
        # O(N C'^2) instead of O(N^2 C') and needs no N x N buffer.
        if self.impl == "sdpa":
            return theta @ (phi.transpose(-2, -1) @ g) / n_keys
        return (theta @ phi.transpose(-2, -1) / n_keys) @ g

    def explicit_attention(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """mmcv's embedded_gaussian: (theta phi^T) /= sqrt(C') (a division, as mmcv writes it; a
        product with 1/sqrt(C') rounds differently unless C' is a power of 4), softmax, then g."""
        n_queries, n_keys = theta.shape[-2], phi.shape[-2]
        keys_t = phi.transpose(-2, -1)
        row_bytes = n_keys * theta.element_size() * theta.shape[0]
        whole = torch.is_grad_enabled() and any(t.requires_grad for t in (theta, phi, g))
        if whole or n_queries * row_bytes <= EXPLICIT_FULL_MATRIX_BYTES:
            return self._explicit_rows(theta, keys_t, g)
        rows = max(1, EXPLICIT_FULL_MATRIX_BYTES // row_bytes)
        return torch.cat([self._explicit_rows(theta[:, i:i + rows], keys_t, g)
                          for i in range(0, n_queries, rows)], dim=1)

    def _explicit_rows(self, theta: torch.Tensor, keys_t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        weights = torch.matmul(theta, keys_t)
        if self.use_scale:
            weights /= self.inter_channels**0.5
        return torch.matmul(weights.softmax(dim=-1), g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # (B, C', H, W) -> (B, HW, C'): positions are the sequence, channels the embedding.
        theta = self.theta(x).flatten(2).transpose(1, 2)
        phi = self.phi(x).flatten(2).transpose(1, 2)
        g = self.g(x).flatten(2).transpose(1, 2)
        y = self.attend(theta, phi, g)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # (B, HW, C') is already the memory of a channels_last (B, C', H, W) tensor: a view, no copy,
            # and conv_out then stays in the input's layout (no oneDNN reorder of y and of its output).
            y = y.reshape(b, h, w, self.inter_channels).permute(0, 3, 1, 2)
        else:
            y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.conv_out(y)
