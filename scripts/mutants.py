"""make mutants: do the learner tests catch small bugs planted in the learners?

Each mutant is a small slip (highest instead of lowest utility, ``>=`` for ``>``, a dropped
bias correction, ...), planted in the population engine, the readable reference AND the compiled
kernel together where they have the code, so that "engine equals reference" (or "kernel equals
reference") cannot catch it: only the hand-computed oracles (tests/test_oracles.py), the
checkpoint round trips (tests/test_member_state.py), the property tests (tests/test_learners.py)
and, for the kernel's own machinery, its comparisons (tests/test_kernel.py) can. The script
copies the repository to a temporary folder once (the working tree is never edited), and for
every mutant applies its edits there, runs the tests against the copy and restores it. The
oracles run once per implementation, so a mutant planted in several must be caught in EACH: the
report names, per implementation, the first test that failed

    mutant
        engine    killed by tests/test_oracles.py::...[engine-...]
        kernel    killed by tests/test_oracles.py::...[kernel-...]
        reference killed by tests/test_oracles.py::...[reference-...]  | SURVIVED

(first all of tests/test_oracles.py and tests/test_member_state.py; where an implementation is not
caught there, its own last resort with ``pytest -x``: tests/test_learners.py for the engine and
the reference, tests/test_kernel.py for the kernel; a test without an implementation parameter
counts for every implementation it was run for). A kernel mutant recompiles the kernel in the
copy (its numba cache follows the sources, kernel/jit.py), ~30 s each. Exit status 1 if a
mutant survived in some implementation or an edit no longer applies. An edit is a textual
replacement whose anchor must occur EXACTLY once in its file, checked for every mutant before
anything runs, so the list cannot rot silently when the learners change
(tests/test_mutants.py checks the anchors in every ``make test`` too).

Usage: ``make mutants`` or ``python scripts/mutants.py [-k SUBSTRING] [--list]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run first, whole (every implementation's tests); then, for an implementation not caught, its last resort with -x
FIRST = ("tests/test_oracles.py", "tests/test_member_state.py", "tests/test_l2_init.py", "tests/test_upgd.py")
LAST_RESORT = {"engine": "tests/test_learners.py", "reference": "tests/test_learners.py",
               "kernel": "tests/test_kernel.py"}
TESTS = FIRST + tuple(sorted(set(LAST_RESORT.values())))
IMPLEMENTATIONS = tuple(LAST_RESORT)

ENGINE = "plasticity_lab/engine/learners/"
CBP, ADAPTED, BASE = ENGINE + "cbp.py", ENGINE + "adapted.py", ENGINE + "base.py"
REDO, SP, OPTIM = ENGINE + "redo.py", ENGINE + "shrink_perturb.py", "plasticity_lab/engine/optim.py"
L2_INIT, UPGD = ENGINE + "l2_init.py", ENGINE + "upgd.py"
REFERENCE = "plasticity_lab/reference/learners/"
REF_CBP, REF_ADAPTED, REF_BASE = REFERENCE + "cbp.py", REFERENCE + "adapted.py", REFERENCE + "base.py"
REF_REDO, REF_SP, REF_OPTIM = REFERENCE + "redo.py", REFERENCE + "shrink_perturb.py", "plasticity_lab/reference/optim.py"
KERNEL = "plasticity_lab/kernel/"
KCBP, KADAPTED, KBASE = KERNEL + "learners/cbp.py", KERNEL + "learners/adapted.py", KERNEL + "learners/base.py"
KSTEP, KPOP = KERNEL + "step.py", KERNEL + "population.py"
REF_L2_INIT, REF_UPGD = REFERENCE + "l2_init.py", REFERENCE + "upgd.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    edits: tuple[tuple[str, str, str], ...]  # (file, anchor, replacement)


def _m(name: str, *edits: tuple[str, str, str]) -> Mutant:
    return Mutant(name, edits)


# the kernel's count of eligible units (every step, kernel/learners/base.py) with age >= m
KERNEL_MATURITY_GE = (KBASE, "eligible += al[i] > m", "eligible += al[i] >= m")
# the engine's host-side count of eligible units (engine/learners/base.py, Maturity) with age >= m
HOST_MATURITY_GE = ((BASE, "self._due[t + int(m) + 1] += add", "self._due[t + int(m)] += add"),
                    (BASE, "young = age[k][age[k] <= self.m[k, l]]", "young = age[k][age[k] < self.m[k, l]]"),
                    (BASE, "t + self.m[k, l] - young + 1,", "t + self.m[k, l] - young,"))

MUTANTS = [
    # ---- CBP (SPEC 3.4)
    _m("cbp: highest u_hat replaced instead of lowest",
       (CBP, "chosen_units(lowest_first(keys, eligible)", "chosen_units(lowest_first(-keys, eligible)"),
       (REF_CBP, "chosen[l] = lowest(-keys if high else keys, eligible, n)",
        "chosen[l] = lowest(keys if high else -keys, eligible, n)"),
       (KCBP, "keyed[i] = (-key if highest else key) if", "keyed[i] = (key if highest else -key) if")),
    _m("cbp: eligible at age >= m",
       (CBP, "eligible = self.age[l][sel] > self.m_dev[l][sel]", "eligible = self.age[l][sel] >= self.m_dev[l][sel]"),
       *HOST_MATURITY_GE,
       (REF_CBP, "                eligible = self.age[l] > self.m[l]\n                n = self.how_many",
        "                eligible = self.age[l] >= self.m[l]\n                n = self.how_many"),
       KERNEL_MATURITY_GE, (KCBP, "if al[i] > m else np.inf", "if al[i] >= m else np.inf")),
    _m("cbp: u_hat without bias correction",
       (CBP, "keys = self.u[l][sel] / self._bc[l][sel]", "keys = self.u[l][sel]"),
       (REF_CBP, "u_hat[l] = self.u[l] / bias_correction", "u_hat[l] = self.u[l]"),
       (KCBP, "else ul[i] / (one - eta ** al[i])  # u_hat", "else ul[i]  # u_hat")),
    _m("cbp: bias correction 1 - eta^(age + 1)",
       (CBP, "bc = self._bc[l] = torch.pow(eta, age)", "bc = self._bc[l] = torch.pow(eta, age + 1)"),
       (REF_CBP, "bias_correction = 1 - eta**self.age[l]", "bias_correction = 1 - eta**(self.age[l] + 1)"),
       (KCBP, "else ul[i] / (one - eta ** al[i])  # u_hat", "else ul[i] / (one - eta ** (al[i] + one))  # u_hat"),
       (KCBP, "table[l, a] = 1 - eta ** age if", "table[l, a] = 1 - eta ** (age + 1) if"),
       (KCBP, "(1 - eta ** a if a < a1", "(1 - eta ** (a + 1) if a < a1")),
    _m("cbp: f_hat without bias correction",
       (CBP, "deviation = (h - (f / bc).unsqueeze(1))", "deviation = (h - f.unsqueeze(1))"),
       (REF_CBP, "f_hat[l] = self.f[l] / bias_correction", "f_hat[l] = self.f[l]"),
       (KCBP, "hb[i], fl[i] / bc[i], n_in", "hb[i], fl[i], n_in"), (KCBP, "f_hat = fl[i] / bcl[i]", "f_hat = fl[i]")),
    _m("cbp: adaptable_contribution not divided by the input magnitude",
       (CBP, "x, scale = out_sum.mul_(deviation).div_(in_sum), n_in / n_next", "x, scale = out_sum.mul_(deviation), 1.0 / n_next"),
       (REF_CBP, "return out_mag * deviation / in_mag", "return out_mag * deviation"),
       (KCBP, "return out_i * abs(h_i - fh_i) / in_i * (n_in / n_next)", "return out_i * abs(h_i - fh_i) / n_next"),
       (KCBP, "xl[i] = out_mag * dev / in_mag", "xl[i] = out_mag * dev")),
    _m("cbp: next layer's bias not corrected (bias_correction ignored)",
       (CBP, "if self.bias_correction:", "if False:"),
       (REF_CBP, "if self.bias_correction:", "if False:"),
       (KCBP, "        if bias_correction:\n", "        if False:\n")),
    _m("cbp: accumulator keeps n (acc -= n dropped)",
       (BASE, "    acc -= n\n", ""),
       (REF_CBP, "            acc[l] -= n\n", ""),
       (KBASE, "    acc[l] -= n\n", "")),
    _m("cbp: coin rule never replaces",
       (BASE, "n[k, l] = 1 if coins[k].next() <= expected[k, l] else 0", "n[k, l] = 0"),
       (REF_CBP, "return 1 if self.coins.next() <= expected else 0", "return 0"),
       (KCBP, "return (1 if coins[coin] <= expected else 0), coin + 1", "return 0, coin + 1")),
    _m("cbp: replaced unit's outgoing weights not zeroed",
       (CBP, "pop.W[l + 1][kk, :, uu] = 0.0", "pass"),
       (REF_BASE, "next_layer.weight[:, units] = 0.0", "pass"),
       (KCBP, "            Wn[i, k] = 0\n", "            pass\n")),
    _m("cbp: replaced unit's bias not zeroed",
       (CBP, "pop.b[l][kk, uu] = 0.0", "pass"),
       (REF_BASE, "layer.bias[units] = 0.0", "pass"),
       (KCBP, "        theta[b0 + i] = 0\n", "        pass\n")),
    _m("cbp: replaced unit keeps its f and u",
       (CBP, "for state in (self.age[l], self.u[l], self.f[l]):", "for state in (self.age[l],):"),
       (REF_CBP, "                self.u[l][units] = 0\n                self.f[l][units] = 0\n", ""),
       (KCBP, "        fl[i] = 0\n        ul[i] = 0\n", "")),
    # ---- [P]'s two-pass CBP and its re-initialisation (SPEC 5)
    _m("cbp: high-utility pass takes the lowest utility",
       (CBP, "keys = -keys  # the highest utility first", "keys = keys"),
       (REF_CBP, "lowest(-keys if high else keys, eligible, n)", "lowest(keys, eligible, n)"),
       (KCBP, "l, n, side == 1, unit_keys, rows,", "l, n, False, unit_keys, rows,")),
    _m("cbp: high-utility pass counts the low pass's units as eligible",
       (CBP, "self.rho_high, eligible - n)", "self.rho_high, eligible)"),
       (REF_CBP, "n = self.how_many(l, int(eligible.sum()), high)",
        "n = self.how_many(l, int(eligible.sum()) + (int((self.age[l] == 0).sum()) if high else 0), high)"),
       (KCBP, "n_due[1, l] - n_due[0, l], accumulate_on,", "n_due[1, l], accumulate_on,")),
    _m("cbp: reinit no_gain ignored (the layer's gain always)",
       (CBP, "gain = CBP_REINIT_GAIN[self.reinit]", "gain = None"),
       (REF_CBP, "CBP_REINIT_GAIN[self.reinit])", "None)"),
       (KCBP, "spec, gain = pop.spec, CBP_REINIT_GAIN[self.reinit]", "spec, gain = pop.spec, None")),
    # ---- optimiser state of replaced units (SPEC 3.4 step 8, 3.6)
    _m("adam: moments of the input row and bias not zeroed",
       (OPTIM, "            self.m[which][layer][kk, uu] = 0.0\n            self.v[which][layer][kk, uu] = 0.0\n", ""),
       (REF_BASE, "        zero_unit_state(self.optimizer, layer.weight, units, dim=0)\n"
                "        zero_unit_state(self.optimizer, layer.bias, units, dim=0)\n", "")),
    _m("adam: moments of the outgoing column not zeroed",
       (OPTIM, "        self.m[0][layer + 1][kk, :, uu] = 0.0\n        self.v[0][layer + 1][kk, :, uu] = 0.0\n", ""),
       (REF_BASE, "        zero_unit_state(self.optimizer, next_layer.weight, units, dim=1)\n", "")),
    _m("adam: step counts not restarted",
       (OPTIM, "self.row_reset[which][layer][kk, uu] = t", "pass"),
       (OPTIM, "self.col_reset[layer + 1][kk, uu] = t", "pass"),
       (REF_OPTIM, "    for value in optimizer.state.get(param, {}).values():\n        if isinstance(value, torch.Tensor)",
        "    for key, value in optimizer.state.get(param, {}).items():\n        if key != 'step' and isinstance(value, torch.Tensor)")),
    # ---- adapted rescaling (SPEC 3.5)
    _m("adapted: low pass takes the highest, high pass the lowest",
       (ADAPTED, 'keys = u_hat if side == "low" else -u_hat', 'keys = -u_hat if side == "low" else u_hat'),
       (REF_ADAPTED, 'lowest(u_hat if side == "low" else -u_hat', 'lowest(-u_hat if side == "low" else u_hat'),
       (KADAPTED, "keyed[i] = (-u_hat if highest else u_hat)", "keyed[i] = (u_hat if highest else -u_hat)")),
    _m("adapted: eligible at age >= m",
       (ADAPTED, "eligible = self.age[l][sel] > self.m_dev[l][sel]", "eligible = self.age[l][sel] >= self.m_dev[l][sel]"),
       *HOST_MATURITY_GE,
       (REF_ADAPTED, "        eligible = self.age[l] > self.m[l]\n        self.acc[side][l] +=",
        "        eligible = self.age[l] >= self.m[l]\n        self.acc[side][l] +="),
       KERNEL_MATURITY_GE, (KADAPTED, "if a > lp[MATURITY, l] else np.inf", "if a >= lp[MATURITY, l] else np.inf")),
    _m("adapted: u_hat without bias correction",
       (ADAPTED, "u_hat = self.u[l][sel] / self._bc[l][sel]", "u_hat = self.u[l][sel]"),
       (REF_ADAPTED, "u_hat = self.u[l] / (1 - self.eta[l] ** self.age[l])", "u_hat = self.u[l]"),
       (KADAPTED, "u_hat = ul[i] / (one - eta ** a)", "u_hat = ul[i]")),
    _m("adapted: bias correction 1 - eta^(age + 1)",
       (ADAPTED, "self._bc[l] = torch.pow(self.eta[l], age)", "self._bc[l] = torch.pow(self.eta[l], age + 1)"),
       (REF_ADAPTED, "u_hat = self.u[l] / (1 - self.eta[l] ** self.age[l])",
        "u_hat = self.u[l] / (1 - self.eta[l] ** (self.age[l] + 1))"),
       (KADAPTED, "u_hat = ul[i] / (one - eta ** a)", "u_hat = ul[i] / (one - eta ** (a + one))")),
    _m("adapted: utility of |a| instead of the signed activation",
       (ADAPTED, "mean = h.squeeze(1) if h.shape[1] == 1 else h.mean(dim=1)",
        "mean = h.squeeze(1).abs() if h.shape[1] == 1 else h.abs().mean(dim=1)"),
       (REF_ADAPTED, "a.mean(dim=0), 1 - self.eta[l])", "a.abs().mean(dim=0), 1 - self.eta[l])"),
       (KADAPTED, "            else:\n                for i in range(H):\n                    ul[i] = lerp(ul[i], hb[i], w)\n",
        "            else:\n                for i in range(H):\n                    ul[i] = lerp(ul[i], abs(hb[i]), w)\n"),
       (KADAPTED, "    mean_h = h[0, i]\n    for b in range(1, B):\n        mean_h += h[b, i]",
        "    mean_h = abs(h[0, i])\n    for b in range(1, B):\n        mean_h += abs(h[b, i])")),
    _m("adapted: bias not rescaled",
       (ADAPTED, "pop.b[l][kk, uu] = pop.b[l][kk, uu] * c", "pass"),
       (REF_ADAPTED, "layer.bias[units] *= self.c[side][l]", "pass"),
       (KADAPTED, "        theta[b0 + i] *= c\n", "        pass\n")),
    _m("adapted: high pass before low pass",
       (ADAPTED, 'n_low = how_many(self.acc["low"], self.rates["low"], eligible)\n'
                 '        n_high = how_many(self.acc["high"], self.rates["high"], eligible - n_low)',
        'n_high = how_many(self.acc["high"], self.rates["high"], eligible)\n'
        '        n_low = how_many(self.acc["low"], self.rates["low"], eligible - n_high)'),
       (ADAPTED, 'for side, n in (("low", n_low[:, l]), ("high", n_high[:, l])):',
        'for side, n in (("high", n_high[:, l]), ("low", n_low[:, l])):'),
       (REF_ADAPTED, 'for side in ("low", "high"):  # low pass first', 'for side in ("high", "low"):  # low pass first'),
       (KADAPTED, "            n_low = accumulate(acc_low, l, lp[RATE_A, l], eligible)\n"
                  "            n_high = accumulate(acc_high, l, lp[RATE_B, l], eligible - n_low)",
        "            n_high = accumulate(acc_high, l, lp[RATE_B, l], eligible)\n"
        "            n_low = accumulate(acc_low, l, lp[RATE_A, l], eligible - n_high)"),
       (KADAPTED, "        rescaled[:] = 0\n        for side in range(2):", "        rescaled[:] = 0\n        for side in (1, 0):")),
    _m("adapted: a unit rescaled low stays eligible for the high pass",
       (ADAPTED, "eligible - n_low)", "eligible)"),
       (REF_ADAPTED, "        eligible = self.age[l] > self.m[l]\n        self.acc[side][l] +=",
        "        eligible = (self.age[l] > self.m[l]) | ((self.age[l] == 0) & (side == 'high'))\n"
        "        self.acc[side][l] +="),
       (KADAPTED, "eligible - n_low)  # the low pass's units have age 0", "eligible)")),
    _m("adapted: accumulators keep n",
       (BASE, "    acc -= n\n", ""),
       (REF_ADAPTED, "self.acc[side][l] -= n", "pass"),
       (KBASE, "    acc[l] -= n\n", "")),
    _m("adapted: clip skipped",
       (ADAPTED, "        self._clip_every_layer(pop)\n", ""),
       (REF_ADAPTED, "if self.clip is not None:", "if False:"),
       (KADAPTED, "        return float(self.clip_host[k])", "        return math.inf")),
    # ---- adapted, schedule per_pass ([P]'s "modified cfg" code, SPEC 5)
    _m("adapted per_pass: the high pass does not age and average again",
       (ADAPTED, "            for l in layers:\n                self._statistics(l, fwd.inputs[l + 1], self._ticks[side][l])",
        "            for l in (layers if side == 'low' else []):\n"
        "                self._statistics(l, fwd.inputs[l + 1], self._ticks[side][l])"),
       (REF_ADAPTED, "                    self.update_utility(l, features[l])\n",
        "                    if side == 'low' or self.rho['low'][l] == 0:\n"
        "                        self.update_utility(l, features[l])\n"),
       (KADAPTED, "twice = per_pass and lp[RATE_A, l] > 0 and lp[RATE_B, l] > 0", "twice = False"),
       (KADAPTED, "            for i in range(H):\n                ul[i] = lerp(ul[i], _batch_mean(h, o + i, B), w)",
        "            for i in range(H if side == 0 or lp[RATE_A, l] == 0 else 0):\n"
        "                ul[i] = lerp(ul[i], _batch_mean(h, o + i, B), w)")),
    _m("adapted per_pass: weights clamped at the biases' bound",
       (ADAPTED, 'pop.W[l][k].clamp_(-PER_PASS_CLIP["weights"], PER_PASS_CLIP["weights"])',
        'pop.W[l][k].clamp_(-PER_PASS_CLIP["biases"], PER_PASS_CLIP["biases"])'),
       (REF_ADAPTED, 'layer.weight.clamp_(-PER_PASS_CLIP["weights"], PER_PASS_CLIP["weights"])',
        'layer.weight.clamp_(-PER_PASS_CLIP["biases"], PER_PASS_CLIP["biases"])'),
       (KADAPTED, "_clamp(theta[w0 : w0 + n_in * H], bound_w)", "_clamp(theta[w0 : w0 + n_in * H], bound_b)")),
    # ---- Shrink & Perturb (SPEC 3.3)
    _m("shrink_perturb: toward_init pulls by s instead of 1 - s",
       (SP, "self.pull = torch.tensor(1.0 - s,", "self.pull = torch.tensor(s,"),
       (REF_SP, "p.lerp_(p0, 1 - self.shrink)", "p.lerp_(p0, self.shrink)")),
    _m("shrink_perturb: noise from torch's global generator",
       (SP, "self.noise_W[l][k].normal_(generator=g)", "self.noise_W[l][k].normal_()"),
       (REF_SP, "torch.randn(p.shape, generator=self.noise_gen)", "torch.randn(p.shape)")),
    # ---- ReDo (SPEC 3.6)
    _m("redo: score < tau instead of <=",
       (REDO, "score <= self.tau_dev[k, l]", "score < self.tau_dev[k, l]"),
       (REF_REDO, "score <= self.taus[l]", "score < self.taus[l]")),
    _m("redo: mean activation without |.|",
       (REDO, "acc.add_(fwd.inputs[l + 1].abs().sum(dim=1))", "acc.add_(fwd.inputs[l + 1].sum(dim=1))"),
       (REF_REDO, "self.act_sum[l] += h.abs().sum(dim=0)", "self.act_sum[l] += h.sum(dim=0)")),
    _m("redo: recycled unit's outgoing weights not zeroed",
       (REDO, "pop.W[l + 1][kk, :, dormant] = 0.0", "pass"),
       (REF_BASE, "next_layer.weight[:, units] = 0.0", "pass")),
    # ---- the kernel's own machinery (kernel/: caught by its comparisons with the reference, tests/test_kernel.py)
    _m("kernel: CBP's in sums miss the step's changes", (KSTEP, "                cs[i] += dcs[i]\n", "                pass\n")),
    _m("kernel: a rescaled layer's touched rows not clamped after the rescaling",
       (KADAPTED, "                    _clamp(W[nz[b, seg + t]], c)", "                    pass")),
    _m("kernel: the per-step clip not fused into the update",
       (KSTEP, "do_clamp and B == 1, tracking", "False, tracking")),
    _m("kernel: read-ahead draws not synced before a checkpoint", (KPOP, "        if self.learner is not None:\n            self.learner.sync_draws(k)\n", "")),
    # ---- L2 Init (Kumar et al. 2023)
    _m("l2_init: gradient lambda (theta - theta_0), not the loss's 2 lambda (theta - theta_0)",
       (L2_INIT, "torch.tensor(2.0 * lam,", "torch.tensor(lam,"),
       (REF_L2_INIT, "return self.lambda_ * sum(", "return 0.5 * self.lambda_ * sum(")),
    _m("l2_init: pulled toward 0, not toward the initial parameters",
       (L2_INIT, "gW.addcmul_(torch.sub(pop.W[l], self.init_W[l])", "gW.addcmul_(pop.W[l]"),
       (L2_INIT, "gb.addcmul_(torch.sub(pop.b[l], self.init_b[l])", "gb.addcmul_(pop.b[l]"),
       (REF_L2_INIT, "((p - p0) ** 2)", "(p ** 2)")),
    # ---- UPGD (Elsayed & Mahmood 2024)
    _m("upgd: utility +g w instead of -g w",
       (UPGD, "self.one_minus_beta.view(shape), value=-1.0)", "self.one_minus_beta.view(shape), value=1.0)"),
       (REF_UPGD, "instantaneous = -w.grad * w", "instantaneous = w.grad * w")),
    _m("upgd: u_hat without bias correction",
       (UPGD, "s = torch.div(u, bias_correction.view(shape)).div_(eta.view(shape))", "s = torch.div(u, eta.view(shape))"),
       (REF_UPGD, "torch.sigmoid(u / bias_correction / eta)", "torch.sigmoid(u / eta)")),
    _m("upgd: eta the last layer's largest utility, not the network's",
       (UPGD, "eta = largest if eta is None else torch.maximum(eta, largest)", "eta = largest"),
       (REF_UPGD, "eta = max(u.max() for u in self.running)", "eta = self.running[-1].max()")),
    _m("upgd: noise not gated by 1 - s",
       (UPGD, "            g.addcmul_(noise.to(pop.dtype), self.sigma_dev.view(shape))\n"
              "            g.mul_(s.neg_().add_(1.0))\n",
        "            g.mul_(s.neg_().add_(1.0))\n"
        "            g.addcmul_(noise.to(pop.dtype), self.sigma_dev.view(shape))\n"),
       (REF_UPGD, "(w.grad + noise * self.sigma) * (1 - scaled_utility)",
        "w.grad * (1 - scaled_utility) + noise * self.sigma")),
    # ---- checkpoints (the engine declares per-member state, engine/state.py; the reference checkpoints whole members)
    _m("checkpoint (engine): cbp's coin stream dropped", (CBP, '"util_gen": MEMBERS, "coins": MEMBERS,', '"util_gen": MEMBERS,')),
    _m("checkpoint (engine): cbp's high-pass accumulator dropped", (CBP, '"acc": MEMBERS, "acc_high": MEMBERS,', '"acc": MEMBERS,')),
    _m("checkpoint (engine): per_pass maturity clocks rebuilt at the step count",
       (ADAPTED, 'm.rebuild(2 * t if group == "both" else t,', 'm.rebuild(t,')),
    _m("checkpoint (engine): cbp's re-init generator dropped", (CBP, '"reinit_gen": MEMBERS, "util_gen"', '"util_gen"')),
    _m("checkpoint (engine): cbp's random-utility generator dropped", (CBP, 'MEMBERS, "util_gen": MEMBERS, "coins"', 'MEMBERS, "coins"')),
    _m("checkpoint (engine): redo's re-init generator dropped", (REDO, '"examples": MEMBERS, "reinit_gen": MEMBERS}', '"examples": MEMBERS}')),
    _m("checkpoint (engine): S&P's noise generator dropped", (SP, '{"noise_gen": MEMBERS, "init_W": PARTS, "init_b": PARTS}', '{"init_W": PARTS, "init_b": PARTS}')),
    _m("checkpoint (engine): UPGD's running utilities dropped",
       (UPGD, 'STATE = {"u_W": PARTS, "u_b": PARTS, "noise_gen": MEMBERS}', 'STATE = {"noise_gen": MEMBERS}')),
    _m("checkpoint (engine): UPGD's noise generator dropped",
       (UPGD, 'STATE = {"u_W": PARTS, "u_b": PARTS, "noise_gen": MEMBERS}', 'STATE = {"u_W": PARTS, "u_b": PARTS}')),
    _m("checkpoint (engine): Adam's per-row/column reset steps dropped",
       (OPTIM, '{"m": PARTS, "v": PARTS, "row_reset": PARTS, "col_reset": PARTS}', '{"m": PARTS, "v": PARTS}')),
]


class StaleMutant(ValueError):
    """An edit's anchor does not occur exactly once in its file (the code it mutates has changed)."""


def check_anchors(root: Path = ROOT, mutants=MUTANTS) -> list[str]:
    """One message per edit whose anchor does not occur exactly once in its file (empty: all apply)."""
    problems = []
    for mutant in mutants:
        for path, anchor, replacement in mutant.edits:
            file = root / path
            count = file.read_text().count(anchor) if file.is_file() else 0
            if count != 1:
                problems.append(f"{mutant.name!r}: anchor found {count} times in {path} (must be exactly once): "
                                f"{anchor!r}")
            elif anchor == replacement:
                problems.append(f"{mutant.name!r}: edit in {path} changes nothing")
    return problems


def apply(mutant: Mutant, root: Path) -> dict[Path, str]:
    """Apply ``mutant`` to the files under ``root`` (a copy); returns their original texts."""
    originals = {}
    for path, anchor, replacement in mutant.edits:
        file = root / path
        text = file.read_text()
        if text.count(anchor) != 1:
            raise StaleMutant(f"{mutant.name!r}: anchor not found exactly once in {path}: {anchor!r}")
        originals.setdefault(file, text)
        file.write_text(text.replace(anchor, replacement))
    return originals


def copy_repository(dest: Path, root: Path = ROOT) -> Path:
    """The source tree (no .git, virtual environment, caches or run outputs) copied into ``dest``."""
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "*.egg-info", "outputs",
                                    "multirun")
    shutil.copytree(root, dest, ignore=ignore, symlinks=True)
    return dest


def implementations(mutant: Mutant) -> list[str]:
    """The implementations a mutant plants a slip in: 'engine', 'kernel' and/or 'reference'."""
    return sorted({path.split("/")[1] for path, _, _ in mutant.edits})


def run_tests(copy: Path, tests, stop_early: bool, timeout: float = 900) -> tuple[int, list[str], str]:
    """pytest on ``tests`` in the copy: (exit status, failing test ids, output tail)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *(["-x"] if stop_early else []), *tests], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=timeout)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)
    return proc.returncode, failed, (proc.stdout + proc.stderr)[-2000:]


def run_mutant(mutant: Mutant, copy: Path) -> dict[str, str]:
    """Apply ``mutant`` to ``copy`` and find, for each implementation it touches, a test that fails.

    First every oracle and member-state test (one run per implementation: ``[engine-...]``,
    ``[kernel-...]``, ``[reference-...]``); for an implementation none of those caught, its last
    resort (``LAST_RESORT``) with -x. Returns {implementation: killing test, or '' if none failed};
    raises RuntimeError when pytest itself fails (a mutant that breaks imports).
    """
    originals = apply(mutant, copy)
    try:
        killers = {impl: "" for impl in implementations(mutant)}
        stages = [(FIRST, False, set(killers))]
        for tests in sorted({LAST_RESORT[impl] for impl in killers}):
            stages.append(((tests,), True, {impl for impl in killers if LAST_RESORT[impl] == tests}))
        for tests, stop_early, concerned in stages:
            if all(killers[impl] for impl in concerned):
                continue
            status, failed, output = run_tests(copy, tests, stop_early)
            if status not in (0, 1) or (status == 1 and not failed):
                raise RuntimeError(f"pytest exited with {status}:\n{output}")
            untagged = [t for t in failed if not any(f"[{impl}" in t for impl in IMPLEMENTATIONS)]
            for impl in concerned:
                mine = [t for t in failed if f"[{impl}" in t] or untagged
                if not killers[impl] and mine:
                    killers[impl] = mine[0]
        return killers
    finally:
        for file, text in originals.items():
            file.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", default="", help="only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.select in m.name]
    problems = check_anchors(ROOT, mutants)
    if problems:
        print("mutants that no longer apply (update scripts/mutants.py):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.list:
        print("\n".join(m.name for m in mutants))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="plasticity_lab-mutants-") as tmp:
        copy = copy_repository(Path(tmp) / "repo")
        status, failed, output = run_tests(copy, TESTS, stop_early=True, timeout=3600)  # all four files: long under load
        if status != 0:
            print(f"the tests fail without any mutant ({failed or output}); fix them first", file=sys.stderr)
            return 1
        print(f"{len(mutants)} mutants, each planted in a copy of the repository ({copy});")
        print(f"killed = a test fails: first {' '.join(FIRST)} (all), then per implementation "
              f"{', '.join(f'{impl}: {tests}' for impl, tests in LAST_RESORT.items())} (-x)\n")
        for mutant in mutants:
            start = time.monotonic()
            try:
                killers = run_mutant(mutant, copy)
            except RuntimeError as err:
                print(f"{mutant.name}: ERROR\n  " + str(err).replace("\n", "\n  "))
                results.append((mutant, False))
                continue
            ok = all(killers.values())
            results.append((mutant, ok))
            print(f"{mutant.name}  ({time.monotonic() - start:.0f} s)")
            for impl, test in killers.items():
                print(f"    {impl:<9} {'killed by ' + test if test else 'SURVIVED'}", flush=True)
    survived = [m.name for m, ok in results if not ok]
    print(f"\n{len(results) - len(survived)} of {len(results)} mutants killed in every implementation they touch"
          + (f"; not: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
