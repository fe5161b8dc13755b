"""Where a member's numbers live in the kernel backend's flat arrays.

One member's weights and biases are one flat vector ``theta`` (a row of the backend's (K, P)
array): per linear layer l, W_l stored INPUT-MAJOR as W_l^T (in, out), then its bias (out,).
The torch views the rest of the framework reads (``W[l]`` (K, out, in), ``b[l]`` (K, out), the
engine's shapes) are transposed views of the same memory, so probes, checkpoints and
recording see the weights without a copy.

Units: the outputs of every linear layer (hidden layers first, then the output layer) are
numbered consecutively; ``uoff[l]`` is where layer l's start. Per-unit learner state (ages,
utilities, ...) uses the hidden part of the same numbering.

``layout`` (int64, 5 rows x (L + 2) columns) holds, per linear layer l = 0 .. L:
``R_SIZES`` the layer sizes [in, h1, .., hL, out] (L + 2 entries), ``R_WOFF`` / ``R_BOFF`` the
offsets of W_l^T and b_l in theta, ``R_UOFF`` the first unit of layer l's outputs, ``R_ACT``
the activation code of hidden layer l (kernel/activations.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ..network import NetworkSpec
from .activations import CODES

R_SIZES, R_WOFF, R_BOFF, R_UOFF, R_ACT = range(5)


class Layout:
    """Offsets of one architecture (``spec``) in theta and in the unit numbering."""

    def __init__(self, spec: NetworkSpec):
        sizes = list(spec.sizes)
        L = spec.num_hidden
        self.L = L
        self.sizes = sizes
        self.woff, self.boff, self.uoff = [], [], []
        p = u = 0
        for l in range(L + 1):
            self.woff.append(p)
            p += sizes[l] * sizes[l + 1]
            self.boff.append(p)
            p += sizes[l + 1]
            self.uoff.append(u)
            u += sizes[l + 1]
        self.num_parameters = p
        self.num_units = u  # every linear layer's outputs
        self.num_hidden_units = self.uoff[L]
        table = np.zeros((5, L + 2), dtype=np.int64)
        table[R_SIZES] = sizes
        table[R_WOFF, : L + 1] = self.woff
        table[R_BOFF, : L + 1] = self.boff
        table[R_UOFF, : L + 1] = self.uoff
        table[R_ACT, :L] = [CODES[a] for a in spec.activations]
        self.table = table

    def weight_view(self, theta: torch.Tensor, l: int) -> torch.Tensor:
        """W_l as a (K, out, in) view of the (K, P) parameter tensor."""
        n_in, n_out = self.sizes[l], self.sizes[l + 1]
        return theta[:, self.woff[l] : self.woff[l] + n_in * n_out].view(-1, n_in, n_out).transpose(1, 2)

    def bias_view(self, theta: torch.Tensor, l: int) -> torch.Tensor:
        """b_l as a (K, out) view of the (K, P) parameter tensor."""
        return theta[:, self.boff[l] : self.boff[l] + self.sizes[l + 1]]

    def hidden_view(self, units: torch.Tensor, l: int) -> torch.Tensor:
        """Hidden layer l's (K, H) columns of a (K, num_hidden_units) per-unit tensor."""
        return units[:, self.uoff[l] : self.uoff[l] + self.sizes[l + 1]]
