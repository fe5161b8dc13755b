"""Readable reset learners for ONE network (the ground truth for the engine's learners).

Each class reads top to bottom like the SPEC section it implements. It is built with its
hyperparameters (scalars, or one value per hidden layer where the SPEC allows), then
``setup(learner)`` attaches it to a ReferenceLearner (its nn.Linear layers, optimiser,
network spec and seed), and ``after_step(features)`` runs after every optimiser step with
the post-activations of that step's forward pass (one (B, H) tensor per hidden layer).

Randomness comes from the member's ALGO stream (seeding.py): REINIT for re-initialised
units, COIN for ``accumulate: false``, UTIL for the random utility, NOISE for S&P, so the
engine (which uses the same sub-streams in the same order) makes the same draws.

Ties between equal utilities are broken by the unit index (stable sort), see ``lowest``.
"""

from __future__ import annotations

import math

import torch

from ..config import CBP_REINIT_GAIN, PER_PASS_CLIP
from ..network import init_weight
from ..seeding import ALGO, COIN, NOISE, REINIT, UTIL, UniformStream, generator
from .optim import zero_unit_state


def per_layer(value, L: int, name: str) -> list:
    """A scalar for every hidden layer, or a list with one value per hidden layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != L:
            raise ValueError(f"{name}: {len(value)} per-layer values for {L} hidden layers")
        return list(value)
    return [value] * L


def lowest(keys: torch.Tensor, eligible: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n eligible units with the smallest key (ties: lowest index first)."""
    candidates = torch.nonzero(eligible).flatten()
    order = torch.sort(keys[candidates], stable=True).indices
    return candidates[order[:n]]


class _ResetLearner:
    COUNTS: tuple[str, ...] = ()

    def setup(self, learner) -> None:
        self.spec = learner.spec
        self.linears = learner.linears  # hidden layers 0..L-1, then the output layer
        self.optimizer = learner.optimizer
        self.seed = learner.seed
        self.L = learner.spec.num_hidden
        self.counts = {name: [0] * self.L for name in self.COUNTS}

    def utility(self, l: int) -> torch.Tensor | None:
        """u_hat = u / (1 - eta^age) of hidden layer l (NaN for units of age 0), or None where
        the learner keeps no utility or does not act on the layer (for the probes)."""
        if not hasattr(self, "u") or not self.acts_on(l):
            return None
        return torch.where(self.age[l] > 0, self.u[l] / (1 - self.eta[l] ** self.age[l]), float("nan"))

    def acts_on(self, l: int) -> bool:
        return True

    def replace_units(self, l: int, units: torch.Tensor, gen: torch.Generator, gain: float | None = None) -> None:
        """Re-initialise units of hidden layer l: input weights from the layer's init
        distribution (``gain`` 1.0: without its activation gain), bias 0, outgoing weights 0,
        optimiser state of all three zeroed."""
        layer, next_layer = self.linears[l], self.linears[l + 1]
        layer.weight[units] = init_weight(self.spec, l, gen, len(units), gain).to(layer.weight)
        layer.bias[units] = 0.0
        next_layer.weight[:, units] = 0.0
        zero_unit_state(self.optimizer, layer.weight, units, dim=0)
        zero_unit_state(self.optimizer, layer.bias, units, dim=0)
        zero_unit_state(self.optimizer, next_layer.weight, units, dim=1)


class ContinualBackprop(_ResetLearner):
    """SPEC 3.4, Dohare et al. 2024 [D] (GnT); per-layer rates [J]; [P]'s high-utility pass
    (``high_replacement_rate``) and re-initialisation without the activation gain
    (``reinit='no_gain'``), SPEC 5 "Preset fidelity"."""

    COUNTS = ("units_reset",)

    def __init__(self, replacement_rate=1e-4, decay_rate=0.99, maturity_threshold=100,
                 util_type="adaptable_contribution", accumulate=True, bias_correction=False,
                 high_replacement_rate=0.0, reinit="init"):
        self.replacement_rate, self.decay_rate = replacement_rate, decay_rate
        self.maturity_threshold, self.util_type = maturity_threshold, util_type
        self.accumulate, self.bias_correction = accumulate, bias_correction
        self.high_replacement_rate, self.reinit = high_replacement_rate, reinit

    def setup(self, learner) -> None:
        super().setup(learner)
        L, widths = self.L, self.spec.sizes[1:-1]
        self.rho = per_layer(self.replacement_rate, L, "replacement_rate")
        self.rho_high = per_layer(self.high_replacement_rate, L, "high_replacement_rate")
        self.eta = per_layer(self.decay_rate, L, "decay_rate")
        self.m = per_layer(self.maturity_threshold, L, "maturity_threshold")
        dtype = self.linears[0].weight.dtype
        self.age = [torch.zeros(H, dtype=dtype) for H in widths]
        self.f = [torch.zeros(H, dtype=dtype) for H in widths]  # running mean activation
        self.u = [torch.zeros(H, dtype=dtype) for H in widths]  # running utility
        self.acc = [0.0] * L  # fractional replacements carried over (low-utility pass)
        self.acc_high = [0.0] * L  # ... of the high-utility pass
        self.reinit_gen = generator(self.seed, ALGO, REINIT)
        self.util_gen = generator(self.seed, ALGO, UTIL)
        self.coins = UniformStream(generator(self.seed, ALGO, COIN))

    def acts_on(self, l: int) -> bool:
        return self.rho[l] > 0 or self.rho_high[l] > 0

    @torch.no_grad()
    def after_step(self, features: list[torch.Tensor]) -> None:
        u_hat = [None] * self.L
        f_hat = [None] * self.L
        for l in range(self.L):
            if not self.acts_on(l):
                continue  # step 1: a layer whose rates are 0 skips the whole algorithm
            h, eta = features[l], self.eta[l]
            # 1-2. ages and the running mean activation, bias-corrected
            self.age[l] += 1
            self.f[l] = torch.lerp(self.f[l], h.mean(dim=0), 1 - eta)  # eta f + (1 - eta) mean_batch(h)
            bias_correction = 1 - eta**self.age[l]
            f_hat[l] = self.f[l] / bias_correction
            # 3. instantaneous utility and its running average
            x = self.instantaneous_utility(l, h, f_hat[l])
            self.u[l] = torch.lerp(self.u[l], x, 1 - eta)  # eta u + (1 - eta) x
            u_hat[l] = self.u[l] / bias_correction
        # 4-8: the low-utility pass in every layer, then [P]'s high-utility pass (its units: the
        # mature ones left after the low pass, chosen by this step's utilities)
        for high, rates in ((False, self.rho), (True, self.rho_high)):
            chosen = [None] * self.L
            for l in range(self.L):
                if rates[l] == 0:
                    continue
                # 4-5. eligible units and how many to replace
                eligible = self.age[l] > self.m[l]
                n = self.how_many(l, int(eligible.sum()), high)
                if n == 0:
                    continue
                keys = u_hat[l]
                if self.util_type == "random":
                    keys = torch.rand(len(keys), generator=self.util_gen).to(keys)
                chosen[l] = lowest(-keys if high else keys, eligible, n)  # highest / lowest utility first
            for l in range(self.L):  # 6-8. replace, layer by layer
                units = chosen[l]
                if units is None:
                    continue
                if self.bias_correction:
                    next_layer = self.linears[l + 1]
                    next_layer.bias += (next_layer.weight[:, units] * f_hat[l][units]).sum(dim=1)
                self.replace_units(l, units, self.reinit_gen, CBP_REINIT_GAIN[self.reinit])
                self.age[l][units] = 0
                self.u[l][units] = 0
                self.f[l][units] = 0
                self.counts["units_reset"][l] += len(units)

    def instantaneous_utility(self, l: int, h: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
        out_mag = self.linears[l + 1].weight.abs().mean(dim=0)  # mean_k |W_next[k, i]|
        in_mag = self.linears[l].weight.abs().mean(dim=1)  # mean_j |W_in[i, j]|
        deviation = (h - f_hat).abs().mean(dim=0)  # mean_batch |h_i - f_hat_i|
        kind = self.util_type
        if kind == "contribution":
            return out_mag * h.abs().mean(dim=0)
        if kind == "adaptable_contribution":
            return out_mag * deviation / in_mag
        if kind == "zero_contribution":
            return out_mag * deviation
        if kind == "weight":
            return out_mag
        if kind == "adaptation":
            return 1 / in_mag
        if kind == "feature_by_input":
            return deviation / in_mag
        if kind == "random":
            return torch.zeros_like(out_mag)  # u_hat is a fresh U(0, 1) draw when units are chosen
        raise ValueError(f"unknown util_type {kind!r}")

    def how_many(self, l: int, eligible: int, high: bool = False) -> int:
        """Step 5 for one pass (``high``: the high-utility pass, its own rate and accumulator):
        accumulate fractional replacements, or (accumulate=false) the coin rule."""
        rate, acc = (self.rho_high, self.acc_high) if high else (self.rho, self.acc)
        expected = rate[l] * eligible
        if self.accumulate:
            acc[l] += expected
            n = math.floor(acc[l])
            acc[l] -= n
            return n
        if eligible > 0 and expected < 1:
            return 1 if self.coins.next() <= expected else 0
        return math.floor(expected)


ADAPTED_COUNTS = ("units_rescaled_low", "units_rescaled_high")


class AdaptedRescaling(_ResetLearner):
    """SPEC 3.5, Purice 2025 [P]: low/high utility rescaling of input rows and biases.

    ``schedule='per_step'`` (the published code): one age / utility update per step, the low
    then the high pass, then every hidden layer clamped to [-clip, clip]. ``schedule='per_pass'``
    ([P]'s "modified cfg" code, SPEC 5): each pass updates ages and utilities itself, and clamps a
    layer in which it rescaled a unit to [-5, 5] (weights) and [-10, 10] (biases).
    """

    COUNTS = ADAPTED_COUNTS

    def __init__(self, c_low=-0.5, c_high=0.5, rho_low=1e-4, rho_high=1e-5, decay_rate=0.99,
                 maturity_threshold=100, clip=10.0, schedule="per_step"):
        self.c_low, self.c_high, self.rho_low, self.rho_high = c_low, c_high, rho_low, rho_high
        self.decay_rate, self.maturity_threshold = decay_rate, maturity_threshold
        self.clip, self.schedule = clip, schedule

    def setup(self, learner) -> None:
        super().setup(learner)
        L, widths = self.L, self.spec.sizes[1:-1]
        self.c = {"low": per_layer(self.c_low, L, "c_low"), "high": per_layer(self.c_high, L, "c_high")}
        self.rho = {"low": per_layer(self.rho_low, L, "rho_low"), "high": per_layer(self.rho_high, L, "rho_high")}
        self.eta = per_layer(self.decay_rate, L, "decay_rate")
        self.m = per_layer(self.maturity_threshold, L, "maturity_threshold")
        dtype = self.linears[0].weight.dtype
        self.age = [torch.zeros(H, dtype=dtype) for H in widths]
        self.u = [torch.zeros(H, dtype=dtype) for H in widths]  # running mean of the SIGNED activation
        self.acc = {"low": [0.0] * L, "high": [0.0] * L}

    def acts_on(self, l: int) -> bool:
        return self.rho["low"][l] > 0 or self.rho["high"][l] > 0

    @torch.no_grad()
    def after_step(self, features: list[torch.Tensor]) -> None:
        if self.schedule == "per_pass":
            for side in ("low", "high"):
                for l in range(self.L):
                    if self.rho[side][l] == 0:
                        continue  # a pass with rate 0 does nothing on this layer, not even age it
                    self.update_utility(l, features[l])
                    if self.rescale(l, side) and self.clip is not None:
                        layer = self.linears[l]
                        layer.weight.clamp_(-PER_PASS_CLIP["weights"], PER_PASS_CLIP["weights"])
                        layer.bias.clamp_(-PER_PASS_CLIP["biases"], PER_PASS_CLIP["biases"])
            return
        for l in range(self.L):
            if not self.acts_on(l):
                continue  # nothing to do on this layer
            self.update_utility(l, features[l])
            for side in ("low", "high"):  # low pass first; its units (age 0) are not eligible for the high pass
                self.rescale(l, side)
        if self.clip is not None:
            for layer in self.linears[: self.L]:
                layer.weight.clamp_(-self.clip, self.clip)
                layer.bias.clamp_(-self.clip, self.clip)

    def update_utility(self, l: int, a: torch.Tensor) -> None:
        """age += 1; u <- eta u + (1 - eta) mean_batch(a), a the signed post-activation."""
        self.age[l] += 1
        self.u[l] = torch.lerp(self.u[l], a.mean(dim=0), 1 - self.eta[l])

    def rescale(self, l: int, side: str) -> int:
        """One pass on layer l: the n eligible units with the lowest (highest) u_hat get their
        input row and bias multiplied by c_side; returns n."""
        u_hat = self.u[l] / (1 - self.eta[l] ** self.age[l])
        eligible = self.age[l] > self.m[l]
        self.acc[side][l] += self.rho[side][l] * int(eligible.sum())
        n = math.floor(self.acc[side][l])
        self.acc[side][l] -= n
        if n == 0:
            return 0
        units = lowest(u_hat if side == "low" else -u_hat, eligible, n)  # lowest or highest utility first
        layer = self.linears[l]
        layer.weight[units] *= self.c[side][l]  # input row AND bias; outgoing weights untouched
        layer.bias[units] *= self.c[side][l]
        self.age[l][units] = 0
        self.u[l][units] = 0
        self.counts[f"units_rescaled_{side}"][l] += n
        return n


class ShrinkPerturb(_ResetLearner):
    """SPEC 3.3: after every step, N(0, sigma^2) noise on every weight and bias (the shrink is
    the optimiser's weight decay), or (mode toward_init) theta <- s theta + (1 - s) theta_init."""

    def __init__(self, sigma=1e-5, mode="noise", shrink=0.99999):
        self.sigma, self.mode, self.shrink = sigma, mode, shrink

    def setup(self, learner) -> None:
        super().setup(learner)
        self.params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        self.initial = [p.detach().clone() for p in self.params]
        self.noise_gen = generator(self.seed, ALGO, NOISE)

    @torch.no_grad()
    def after_step(self, features) -> None:
        for p, p0 in zip(self.params, self.initial):
            if self.mode == "noise":
                if self.sigma > 0:
                    p += torch.randn(p.shape, generator=self.noise_gen).to(p) * self.sigma
            else:
                p.lerp_(p0, 1 - self.shrink)  # = s p + (1 - s) p0


class ReDo(_ResetLearner):
    """SPEC 3.6, Sokar et al. 2023: every reset_period steps recycle units with score <= tau."""

    COUNTS = ("units_reset",)

    def __init__(self, reset_period=100, tau=0.1):
        self.reset_period, self.tau = reset_period, tau

    def setup(self, learner) -> None:
        super().setup(learner)
        self.taus = per_layer(self.tau, self.L, "tau")
        dtype = self.linears[0].weight.dtype
        self.act_sum = [torch.zeros(H, dtype=dtype) for H in self.spec.sizes[1:-1]]
        self.examples = 0
        self.steps = 0
        self.reinit_gen = generator(self.seed, ALGO, REINIT)

    @torch.no_grad()
    def after_step(self, features: list[torch.Tensor]) -> None:
        for l, h in enumerate(features):
            self.act_sum[l] += h.abs().sum(dim=0)
        self.examples += features[0].shape[0]
        self.steps += 1
        if self.steps % self.reset_period:
            return
        for l in range(self.L):
            mean_abs = self.act_sum[l] / self.examples
            score = mean_abs / (mean_abs.mean() + 1e-9)
            dormant = torch.nonzero(score <= self.taus[l]).flatten()
            if len(dormant):
                self.replace_units(l, dormant, self.reinit_gen)
                self.counts["units_reset"][l] += len(dormant)
            self.act_sum[l].zero_()
        self.examples = 0


REFERENCE_CLASSES = {"cbp": ContinualBackprop, "adapted": AdaptedRescaling,
                     "shrink_perturb": ShrinkPerturb, "redo": ReDo}
