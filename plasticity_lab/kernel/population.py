"""The kernel backend: K members trained one after another by a compiled step (DESIGN, "Backends").

``KernelPopulation`` answers the engine's whole interface (it IS a ``Population``: ``train``,
``take_totals``, ``take_counts``, ``freeze``, ``member_state`` / ``load_member_states``, and the
probes' ``hidden_features``, ``predict``, ``stacked_parameters``, ``example_deltas``,
``parameters_of``), so the runner, probes, checkpoints and recording work unchanged. Only
``train`` differs: instead of one batched step of all K members at a time, each member runs
through the whole chunk in compiled code (kernel/step.py) while its weights stay in cache,
then the next member (member-major time-blocking). Members are independent, so the results
are those of the members alone.

Storage: every member's weights and biases are one row of ``theta`` (K, P) in the kernel's
layout (kernel/layout.py: W^T input-major); ``W[l]`` (K, out, in) and ``b[l]`` (K, out) are
transposed views of it, so whatever reads or writes them (probes, checkpoints, a test) reads
or writes the kernel's numbers. Learner state (ages, utilities) lives likewise in flat
per-unit tensors (kernel/learners/). numpy views of these tensors are what the compiled code
receives; torch owns the memory, so ``copy.deepcopy`` (the timing probe) keeps the views
consistent.

Events: ``train_member`` returns when the member's learner must act; ``learner.handle_event``
performs the replacement / rescaling with the member's own generators, and the loop goes on.
For ``accumulate: false`` CBP, the member's coins are read ahead from its stream
(``UniformStream.peek``) and only those used are consumed (``skip``), so its sequence, and
its checkpointed state, are the engine's.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from ..engine.optim import SGDSettings
from ..engine.population import Population
from ..network import NetworkSpec
from . import codes as S
from .step import train_member
from .layout import Layout
from .learners.base import _NO_DRAWS, NUM_ROWS, KernelLearner
from .optim import KernelMomentumSGD, make_kernel_optimizer

COIN_BLOCK = 4096  # coins read ahead per call (accumulate: false)
log = logging.getLogger(__name__)


class KernelPopulation(Population):
    """K MLPs of one architecture on the compiled CPU kernel; the constructor takes the
    engine's arguments (``optimizer`` SGD settings only; ``learner`` a kernel learner,
    kernel/learners/, or None), see ``Population``."""

    # theta: the storage of W / b (checkpointed through them, engine/state.py); numpy views of it and
    # the step's work arrays; frozen: diverged members (never resumed)
    REBUILT = ("theta", "_np", "_scratch_arrays", "_work_space", "_info", "frozen")

    def __init__(self, spec: NetworkSpec, seeds: list[int], optimizer=SGDSettings(), weight_decay=0.0,
                 device="cpu", dtype=torch.float32, learner=None, loss: str = "cross_entropy"):
        if torch.device(device).type != "cpu":
            raise ValueError(f"the kernel backend runs on the CPU, not device={device}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the kernel backend runs float32 or float64, not {dtype}")
        if learner is not None and not isinstance(learner, KernelLearner):
            raise ValueError(f"the kernel backend needs a kernel learner (kernel/learners/), not {type(learner).__name__}")
        self.layout = Layout(spec)
        self.frozen = np.zeros(len(seeds), dtype=bool)
        self._np = None
        super().__init__(spec, seeds, optimizer, weight_decay, device, dtype, learner, loss)
        self._warm_up()

    def _warm_up(self) -> None:
        """Load (first time: compile, ~30 s, then cached by numba) the compiled code now, so that
        training time, e.g. the first task's projection (summary.py), does not include it."""
        start = time.perf_counter()
        x = torch.zeros(self.K, 0, self.spec.sizes[0], dtype=self.dtype)
        self._train(x, torch.zeros(self.K, 0, dtype=self.dtype if self.loss == "squared_error" else torch.long), 1)
        if self.learner is not None:
            self.learner.warm_up(self)
        seconds = time.perf_counter() - start
        if seconds > 5:
            log.info("compiled the kernel backend in %.0f s (numba caches it: later runs load it in about 1 s)",
                     seconds)

    def _allocate(self, params: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every member's weights and biases in one row of ``theta`` (K, P); W[l], b[l] are views."""
        self.theta = torch.zeros(len(params), self.layout.num_parameters, dtype=self.dtype)
        W = [self.layout.weight_view(self.theta, l) for l in range(self.spec.num_hidden + 1)]
        b = [self.layout.bias_view(self.theta, l) for l in range(self.spec.num_hidden + 1)]
        for k, member in enumerate(params):
            for l, (W_l, b_l) in enumerate(member):
                W[l][k] = W_l.to(self.dtype)
                b[l][k] = b_l.to(self.dtype)
        return W, b

    def _make_optimizer(self, settings: list, needs_gradients: bool):
        return make_kernel_optimizer(self, settings)

    # ------------------------------------------------------------------ numpy views
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_np"] = None  # numpy views are rebuilt from the (deep-copied) tensors
        return state

    def _arrays(self) -> dict:
        """numpy views of the tensors the compiled code reads and writes (cached)."""
        if self._np is None:
            self._np = {"theta": self.theta.numpy(), "step_size": self.step_size.numpy(),
                        "weight_decay": self.weight_decay.numpy()}
        return self._np

    def member_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Member k's theta (P,) and momentum buffer (P,; empty without momentum), numpy views."""
        buf = self.optimizer.buf.numpy()[k] if isinstance(self.optimizer, KernelMomentumSGD) else self._no_buf
        return self._arrays()["theta"][k], buf

    # ------------------------------------------------------------------ training
    def train(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1):
        """Train on a chunk (x (K, n, in), y (K, n)) in consecutive batches of ``batch_size``,
        member after member."""
        self._train(x, y, batch_size)

    def _train(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        n = x.shape[1]
        arrays = self._arrays()
        xs = x.detach().cpu().to(self.dtype).numpy()
        regression = self.loss == "squared_error"
        ys = y.detach().cpu().to(self.dtype if regression else torch.long).numpy()
        scratch = self._scratch(min(batch_size, n))
        totals = np.zeros(2)
        info = self._info = np.zeros(S.NUM_INFO, dtype=np.int64)
        learner = self.learner
        for k in range(self.K):
            if self.frozen[k]:
                continue
            xk = np.ascontiguousarray(xs[k])
            yk = np.ascontiguousarray(ys[k])
            flags, hyper, buf = self._member_settings(k, batch_size)
            lstate = learner.kernel_state(k) if learner is not None else self._no_learner
            code = flags[S.F_LEARNER]  # (the loop compiled for this learner alone: step.train_member)
            which = (flags if code == S.LEARNER_CBP else None, flags if code == S.LEARNER_ADAPTED else None)
            y_class, y_value = (self._no_class, yk) if regression else (yk, self._no_value)
            totals[:] = 0.0
            flags[S.F_SYNC_SUMS] = flags[S.F_FULL_CLAMP] = 1  # a new chunk: every |w| sum recomputed, every
            # hidden layer clamped whole (kernel/step.py)
            start = 0
            while True:  # (at least one call, so that an empty chunk loads the compiled code: _warm_up)
                if learner is not None:
                    ahead = (learner.coins_ahead(k, COIN_BLOCK), *learner.draws_ahead(k))
                else:
                    ahead = self._nothing_ahead
                train_member(self.layout.table, arrays["theta"][k], buf, hyper, flags, xk, y_class, y_value,
                             start, n, *lstate, *ahead, *scratch, totals, info, *which)
                flags[S.F_SYNC_SUMS] = flags[S.F_FULL_CLAMP] = 0
                if learner is not None:
                    learner.coins_used(k, int(info[S.I_COINS_USED]))
                    if info[S.I_EVENT] == S.EVENT_NEED_DRAWS:  # the step's replacements, after drawing further ahead
                        learner.handle_event(self, k, scratch[5], flags)
                start = int(info[S.I_NEXT])
                if start >= n:
                    break
            self.loss_sum[k] += totals[0]
            self.correct[k] += int(totals[1])
        self.t += math.ceil(n / batch_size)

    def _member_settings(self, k: int, batch_size: int):
        """(flags, hyper, momentum buffer) of member k for the compiled step."""
        a = self._arrays()
        alpha, lam = float(a["step_size"][k]), float(a["weight_decay"][k])
        momentum = float(self.optimizer.momentum[k]) if isinstance(self.optimizer, KernelMomentumSGD) else 0.0
        flags = np.zeros(S.NUM_FLAGS, dtype=np.int64)
        flags[S.F_BATCH] = batch_size
        flags[S.F_LOSS] = S.LOSS_SQUARED_ERROR if self.loss == "squared_error" else S.LOSS_CROSS_ENTROPY
        flags[S.F_MOMENTUM] = momentum != 0.0
        flags[S.F_DECAY] = lam != 0.0
        hyper = np.zeros(S.NUM_HYPER)
        hyper[S.H_ALPHA], hyper[S.H_LAMBDA], hyper[S.H_MOMENTUM] = alpha, lam, momentum
        hyper[S.H_DECAY] = float(self._decay[k])
        hyper[S.H_CLIP] = math.inf
        if self.learner is not None:
            self.learner.kernel_flags(k, flags, hyper)
        buf = self.optimizer.buf.numpy()[k] if momentum != 0.0 else self._no_buf
        return flags, hyper, buf

    def _scratch(self, B: int) -> tuple:
        """Per-call work arrays of the compiled step (it allocates nothing, kernel/jit.py): pre-activations
        z, activations h, deltas (B, units), every linear layer's non-zero inputs (indices (B, in +
        units), counts (B, L + 1)), the units due (2, L), then ``work_space``'s."""
        key = (B, self.dtype)
        if getattr(self, "_scratch_key", None) != key:
            U, n_in, L = self.layout.num_units, self.spec.sizes[0], self.spec.num_hidden
            d = np.dtype(str(self.dtype).removeprefix("torch."))
            self._scratch_arrays = (np.zeros((B, U), d), np.zeros((B, U), d), np.zeros((B, U), d),
                                    np.zeros((B, n_in + U), np.int64), np.zeros((B, L + 1), np.int64),
                                    np.zeros((2, max(L, 1)), np.int64), *self.work_space().values())
            self._scratch_key = key
        return self._scratch_arrays

    def work_space(self) -> dict:
        """The step's and the learners' work arrays that do not depend on the batch: ``work`` float64
        (4, units), ``dcs`` (units,) in the dtype, ``iota`` = 0, 1, ..., units - 1, ``marks`` (3, units)
        int64 (kernel/step.py, kernel/learners/)."""
        if getattr(self, "_work_space", None) is None:
            U, d = self.layout.num_units, np.dtype(str(self.dtype).removeprefix("torch."))
            self._work_space = {"work": np.zeros((4, U)), "dcs": np.zeros(U, d), "iota": np.arange(U, dtype=np.int64),
                                "marks": np.zeros((3, U), np.int64)}
        return self._work_space

    @property
    def _no_buf(self):
        return np.zeros(0, self._arrays()["theta"].dtype)

    _no_value = property(lambda self: np.zeros(0, self._arrays()["theta"].dtype))
    _no_class = np.zeros(0, np.int64)

    @property
    def _no_learner(self):
        """The learner arguments of the compiled step when there is no learner (never read)."""
        d = self._arrays()["theta"].dtype
        L = self.spec.num_hidden
        z = np.zeros(0, d)
        return (np.zeros((NUM_ROWS, L)), np.zeros((NUM_ROWS, L), d), z, z, z, np.zeros(L), np.zeros(L), np.zeros(0),
                np.zeros(0), np.zeros((2, L), d), np.zeros((2, L), np.int64), np.zeros((L, 0)))

    _nothing_ahead = (np.zeros(0), *_NO_DRAWS)  # no coins, no draws

    # ------------------------------------------------------------------ members
    def member_state(self, k: int) -> dict:
        """The engine's member state; first the learner's generators are put where the draws member k
        used leave them (its read-ahead draws are not part of the state, kernel/draws.py)."""
        if self.learner is not None:
            self.learner.sync_draws(k)
        return super().member_state(k)

    def freeze(self, k: int):
        """Stop member k (diverged): zero its weights, step size and learner state; it is not trained any more."""
        super().freeze(k)
        self.frozen[k] = True
