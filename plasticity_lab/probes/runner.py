"""Probes inside a run: at the start of each task, measure every live member in one batched pass.

The runner calls ``before_task(task, status)`` at the start of every task (after the
previous task's training) and ``finish(num_tasks, status)`` after the last one. A probe at
task t measures the network trained on tasks 0..t-1, on the first examples of task t
(SPEC 4), and writes rows ``(task=t, step=t * steps_per_task, metric, layer, value)``
through each member's RunRecorder (layer = 1-based layer index, empty for network-level
metrics) and matrices into ``arrays/*.npz`` of the member's run folder.

Probes never change training: no draws from any generator (a task's permutation and
example order are re-derived from (seed, task), SPEC 1), no writes to the backend (all
under ``torch.no_grad``; gradients via ``torch.autograd.grad`` or the engine's manual
backward, never ``.grad``), and timing runs on a deep copy of the backend.

The backend interface the probes use (both Population and ReferencePopulation answer it):
``hidden_features(x) -> [h_l (K, B, H)]``, ``predict(x) -> logits (K, B, C)``,
``stacked_parameters() -> [(W (K, out, in), b (K, out))]``,
``example_deltas(x, y) -> (inputs [x, h1..hL], deltas [D_1..D_{L+1}])``, and
``train(x, y, batch_size)`` / ``take_totals()`` for timing.

Learners with utilities (cbp, adapted) are found by duck typing on the backend or
``backend.learner``, whichever has the method first: ``utility_stats() -> {layer (1-based):
u_hat (K, H)}``, the bias-corrected utility of every unit (NaN entries, e.g. units of age 0,
are ignored). (The units a learner reset or rescaled during a task are the learner's per-task
counts, which the run loop records, run.py.)
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from . import metrics as M
from .arrays import update_npz
from .settings import ProbeSettings

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ProbeRunner:
    """Evaluates the configured probes for all K members; see the module docstring. Probes keep
    no per-member state (a resumed run's probes start afresh)."""

    def __init__(self, settings: ProbeSettings, stream, backend, recorders, steps_per_task: int,
                 heldout: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.settings = settings
        self.stream = stream
        self.backend = backend
        self.recorders = recorders
        self.steps_per_task = steps_per_task
        self.device = torch.device(stream.device)
        self.heldout = None
        if heldout is not None:
            images, labels = heldout
            self.heldout = ((images.to(self.device, stream.images.dtype) / 255.0).contiguous(),
                            labels.to(self.device, torch.long))
        if settings.forgetting.enabled and self.heldout is None:
            raise ValueError("the forgetting probe needs held-out images (heldout=(images, labels))")
        self.costs: dict[str, float] = {}  # probe -> seconds of its latest evaluation
        self._train_start: float | None = None
        self._task_cache: dict = {}
        self._failed: set[str] = set()

    # ------------------------------------------------------------------ hooks
    def before_task(self, task: int, status: list[str]) -> None:
        """Probes due at the start of ``task``; also closes the previous task's wall time."""
        start = time.perf_counter()
        if task > 0:
            self._after_training(task - 1, status, start)
        self._run(task, status, final=False)
        if self.settings.timing.wall_time:
            self._add(task, "probe_time", [time.perf_counter() - start] * len(self.recorders), "", status)
        self._train_start = time.perf_counter()

    def finish(self, num_tasks: int, status: list[str]) -> None:
        """After the last task: its wall time, then the final probe (task = num_tasks)."""
        self._after_training(num_tasks - 1, status, time.perf_counter())
        if self.settings.final:
            self._run(num_tasks, status, final=True)

    # ------------------------------------------------------------------ plumbing
    def _after_training(self, task: int, status, now: float) -> None:
        """The row about the task just trained: wall_time_task (task = that task)."""
        if self.settings.timing.wall_time and self._train_start is not None:
            self._add(task, "wall_time_task", [now - self._train_start] * len(self.recorders), "", status,
                      step=(task + 1) * self.steps_per_task)

    def _run(self, task: int, status, final: bool) -> None:
        if not any(s == "running" for s in status):
            return
        self._task_cache = {}
        for name, probe in self.settings.probes().items():
            if probe.due(task) or (final and probe.enabled and name != "timing"):
                start = time.perf_counter()
                self._guard(name, getattr(self, f"_{name}"), task, status)
                self.costs[name] = time.perf_counter() - start
        self._task_cache = {}

    def _guard(self, name, fn, task, status):
        try:
            with torch.no_grad():
                fn(task, status)
        except Exception as err:
            if self.settings.on_error == "raise":
                raise
            if name in self._failed:  # the traceback once per probe, then one line per failure
                log.warning("probe %r failed again at task %d: %s: %s", name, task, type(err).__name__, err)
            else:
                self._failed.add(name)
                log.exception("probe %r failed at task %d; the run goes on without it", name, task)

    def _add(self, task, metric, values, layer, status, step=None):
        """One row per live member; ``values`` is a (K,) tensor or a list."""
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().tolist()
        step = task * self.steps_per_task if step is None else step
        for k, r in enumerate(self.recorders):
            if status[k] == "running":
                r.add(task, step, metric, float(values[k]), layer)

    def _save(self, name: str, per_member: list[dict], status) -> None:
        for k, r in enumerate(self.recorders):
            if status[k] == "running" and per_member[k]:
                update_npz(Path(r.out_dir) / "arrays" / f"{name}.npz", per_member[k])

    def _order(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(perms (K, in), orders (K, N)) of ``task``, re-derived from the seeds (no generator state used)."""
        if "order" not in self._task_cache:
            self._task_cache["order"] = self.stream.task_tensors(task)
        return self._task_cache["order"]

    def _examples(self, task: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n (<= the task's size) examples of ``task`` for every member: x (K, n, in), y (K, n)."""
        perms, orders = self._order(task)
        return self.stream.gather(perms, orders[:, :n])

    def _features(self, task: int) -> list[torch.Tensor]:
        """Hidden features [(K, N, H)] on the first ``examples`` examples of the task, chunk by chunk."""
        if "features" not in self._task_cache:
            n = min(self.settings.examples, self.stream.examples_per_task)
            perms, orders = self._order(task)
            parts = []
            for s in range(0, n, self.settings.chunk):
                x, _ = self.stream.gather(perms, orders[:, s : min(n, s + self.settings.chunk)])
                parts.append(self.backend.hidden_features(x))
            self._task_cache["features"] = [torch.cat(layer, dim=1) for layer in zip(*parts)]
        return self._task_cache["features"]

    def _source(self, method: str):
        for obj in (self.backend, getattr(self.backend, "learner", None)):
            if obj is not None and callable(getattr(obj, method, None)):
                return getattr(obj, method)
        return None

    # ------------------------------------------------------------------ probes
    def _rank(self, task, status):
        p = self.settings.rank
        saved = [{} for _ in self.recorders]
        for l, feats in enumerate(self._features(task), start=1):
            values, sv = M.rank_metrics(feats, p.fraction, p.rtol, p.method)
            for metric, v in values.items():
                self._add(task, metric, v, l, status)
            if p.save_singular_values:
                for k in range(len(saved)):
                    saved[k][f"task_{task}_layer_{l}"] = sv[k].cpu().numpy()
        if p.save_singular_values:
            self._save("singular_values", saved, status)

    def _activity(self, task, status):
        tau = self.settings.activity.dormant_threshold
        for l, feats in enumerate(self._features(task), start=1):
            for metric, v in M.activity_metrics(feats, tau).items():
                self._add(task, metric, v, l, status)

    def _weights(self, task, status):
        weights = [W for W, _ in self.backend.stacked_parameters()]
        per_layer, network = M.weight_magnitude(weights)
        for l, (W, mag) in enumerate(zip(weights, per_layer), start=1):
            self._add(task, "weight_magnitude", mag, l, status)
            self._add(task, "weight_norm", M.weight_norm(W), l, status)
        self._add(task, "weight_magnitude", network, "", status)

    def _utility(self, task, status):
        stats = self._source("utility_stats")
        if stats is None:
            return
        for l, u_hat in sorted(stats().items()):
            if torch.isnan(u_hat).all():  # no unit has a utility yet (e.g. before the first step)
                continue
            for metric, v in M.utility_summary(u_hat).items():
                self._add(task, metric, v, int(l), status)

    def _grams(self, task, n):
        x, y = self._examples(task, n)
        inputs, deltas = self.backend.example_deltas(x, y)
        return M.gradient_gram(inputs, deltas)

    def _grad_covariance(self, task, status):
        grams = self._grams(task, self.settings.grad_covariance.examples)
        cos = M.cosine_matrix(sum(grams))
        off = ~torch.eye(cos.shape[-1], dtype=torch.bool, device=cos.device)
        self._add(task, "grad_cosine_mean", cos[:, off].mean(dim=-1), "", status)  # NaN if S = 1
        self._save("grad_covariance", [{f"task_{task}": cos[k].cpu().numpy()} for k in range(cos.shape[0])], status)

    def _grad_rank(self, task, status):
        p = self.settings.grad_rank
        grams = self._grams(task, p.examples)
        for l, G in enumerate(grams, start=1):
            self._add(task, "grad_rank", M.gradient_rank(G, p.fraction), l, status)
        self._add(task, "grad_rank", M.gradient_rank(sum(grams), p.fraction), "", status)

    def _forgetting(self, task, status):
        images, labels = self.heldout
        accs = []
        for j in range(1, self.settings.forgetting.previous + 1):
            if task - j < 0:
                break
            perms = torch.stack([self.stream.task_indices(s, task - j)[0] for s in self.stream.seeds]).to(self.device)
            correct = torch.zeros(len(self.stream.seeds), dtype=torch.long, device=self.device)
            for s in range(0, images.shape[0], self.settings.chunk):
                rows = images[s : s + self.settings.chunk].unsqueeze(0).expand(perms.shape[0], -1, -1)
                x = torch.gather(rows, 2, perms.unsqueeze(1).expand_as(rows))
                pred = self.backend.predict(x).argmax(dim=-1)
                correct += (pred == labels[s : s + self.settings.chunk]).sum(dim=1)
            acc = correct.to(torch.float64) / images.shape[0]
            accs.append(acc)
            self._add(task, f"past_task_accuracy_{j}", acc, "", status)
        if accs:
            self._add(task, "past_task_accuracy_mean", torch.stack(accs).mean(dim=0), "", status)

    def _timing(self, task, status):
        p = self.settings.timing
        with timing_copy(self.backend) as scratch, torch.enable_grad():  # the reference trains by autograd
            x, y = self._examples(task, p.examples)
            for name, value in time_backend(scratch, x, y, p.batch_sizes, self.device).items():
                self._add(task, name, [value] * len(self.recorders), "", status)


@contextmanager
def timing_copy(backend):
    """A deep copy of the backend (weights, learner state, generators), dropped afterwards."""
    scratch = copy.deepcopy(backend)
    try:
        yield scratch
    finally:
        del scratch


def time_backend(backend, x: torch.Tensor, y: torch.Tensor, batch_sizes, device) -> dict[str, float]:
    """[P] table 2: mean seconds per example per member of inference (forward) and of an update
    (``backend.train``: forward + backward + step + the learner's reset) for each batch size B.

    ``backend`` is trained on (x, y): pass a scratch copy. Time = wall time of
    ceil-free floor(n / B) batches / (batches * B * K), after one warm-up batch, so with
    K = 1 it is a single network's per-example time, and with K > 1 the per-member share
    of the batched step.
    """
    out = {}
    K, n = x.shape[0], x.shape[1]
    for B in batch_sizes:
        steps = n // B
        if steps == 0:
            log.warning("timing: batch size %d is larger than the %d timing examples; skipped", B, n)
            continue
        used = steps * B
        backend.predict(x[:, :B])  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for s in range(0, used, B):
            backend.predict(x[:, s : s + B])
        _sync(device)
        out[f"time_inference_b{B}"] = (time.perf_counter() - t0) / (used * K)
        backend.train(x[:, :B], y[:, :B], B)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        backend.train(x[:, :used], y[:, :used], B)
        _sync(device)
        out[f"time_update_b{B}"] = (time.perf_counter() - t0) / (used * K)
        backend.take_totals()
    return out


class NullProbes:
    """The runner's stand-in when every probe is off."""

    costs: dict = {}

    def before_task(self, task, status):
        pass

    def finish(self, num_tasks, status):
        pass


def build_probes(settings, stream, backend, recorders, images: torch.Tensor, labels: torch.Tensor,
                 steps_per_task: int):
    """The probes of a run (``settings``: RunSettings): a ProbeRunner, or NullProbes if all are off.

    Held-out images for the forgetting probe: the LAST ``probes.forgetting.holdout`` images
    of the split (``images``, ``labels``: the whole split, uint8 / int), which the config
    validation guarantees the training stream never uses (probes.settings.check_holdout).
    """
    ps = settings.probes
    if ps is None or not ps.any_enabled:
        return NullProbes()
    heldout = None
    if ps.forgetting.enabled:
        h = ps.forgetting.holdout
        if stream.pool > images.shape[0] - h:
            raise ValueError(f"probes.forgetting.holdout={h}: the training stream uses images 0..{stream.pool - 1} "
                             f"of {images.shape[0]}, so the last {h} are not held out")
        heldout = (images[-h:], labels[-h:])
    return ProbeRunner(ps, stream, backend, recorders, steps_per_task, heldout)
