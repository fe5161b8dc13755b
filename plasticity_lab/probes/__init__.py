"""Measurements (SPEC 4): pure metric functions, validated settings, and the in-run probe runner.

- :mod:`.metrics`: rank family, dead units, dormant ratio, weight and feature norms,
  gradient Gram / cosine matrices and gradient rank, utility summaries (pure functions);
- :mod:`.settings`: the ``probes`` config group's schema and cadence logic;
- :mod:`.runner`: :class:`ProbeRunner`, called by ``run.py`` before every task;
- :mod:`.bench`: ``probe_overhead(...)``, the cost of a probe preset relative to training.

What lands in ``metrics.csv`` (``layer``: 1-based; hidden layers 1..L, and L+1 = the output
layer for weight and gradient metrics; empty = network-level). A row with ``task = t``
from a probe describes the network at the START of task t (trained on tasks 0..t-1),
measured on the first ``probes.examples`` examples of task t; ``task = num_tasks`` is the
final probe. ``step`` = SGD steps taken before the measurement.

=========================  =======  ==========================================================
metric                     layer    meaning
=========================  =======  ==========================================================
rank                       1..L     singular values of the N x H feature matrix > max(N, H) eps sigma_max
effective_rank             1..L     exp(-sum p ln p), p = sigma / sum sigma (Roy & Vetterli 2007)
approximate_rank           1..L     smallest k with 99% of sum sigma^2
abs_approximate_rank       1..L     smallest k with 99% of sum sigma
stable_rank                1..L     ||A||_F^2 / ||A||_2^2
dead_units, dead_fraction  1..L     units exactly 0 on every probe example
dormant_ratio              1..L     share of units with mean|h_i| / mean_j mean|h_j| <= tau (ReDo)
feature_norm               1..L     mean over examples of ||h||_2
weight_magnitude           1..L+1,  mean |w| (weights only) per layer / over the whole network
                           empty
weight_norm                1..L+1   Frobenius norm of W
utility_mean/median/       1..L     statistics of u_hat over the units (learners that keep one)
min/max
units_reset                1..L     units reset DURING task t (row task = t; cbp, redo: recorded every task by
                                    the run loop from the learner's counts, as units_rescaled_low/high for adapted)
grad_rank                  1..L+1,  smallest k with 99% of the eigenvalue sum of the per-example
                           empty    gradient Gram matrix, per layer / jointly [J]
grad_cosine_mean           empty    mean off-diagonal entry of the gradient cosine matrix [P]
past_task_accuracy_<j>     empty    accuracy on held-out images under the permutation of task t-j
past_task_accuracy_mean    empty    mean of the above over j = 1..previous
time_inference_b<B>,       empty    seconds per example per member, forward / full update at batch B
time_update_b<B>                    (on a scratch copy; [P] table 2)
wall_time_task             empty    seconds of training in task t (row task = t)
probe_time                 empty    seconds the probes took before task t
=========================  =======  ==========================================================

Arrays (``arrays/*.npz``, keys by task): ``grad_covariance.npz`` (``task_<t>``: S x S cosine
matrix C[i, j] = <g_i, g_j> / (||g_i|| ||g_j||)), ``singular_values.npz``
(``task_<t>_layer_<l>``, with ``probes.rank.save_singular_values``).

Held-out images for forgetting: the LAST ``probes.forgetting.holdout`` images of the split.
Training never uses them only with ``dataset.subset=fixed`` and
``images_per_task + holdout <= split size``; anything else is a ConfigError (the probe
never shrinks the training set). The default protocol (all 10,000 test images per task)
therefore needs e.g. ``dataset.images_per_task=9000`` for forgetting.
"""

from .runner import NullProbes, ProbeRunner, build_probes, time_backend
from .settings import ProbeSettings, parse_probes

__all__ = ["NullProbes", "ProbeRunner", "ProbeSettings", "build_probes", "parse_probes", "time_backend"]
