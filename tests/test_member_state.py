"""A member's checkpoint state (engine: ``member_state`` / ``load_member_states``, engine/state.py;
reference: the whole member) taken mid-run resumes exactly, in each implementation on its own.

Every case makes the learner act after the resume and draw from each generator it owns (the
coin stream with rho x #eligible < 1, the random-utility and re-init streams, S&P noise, Adam's
per-row and per-column reset steps), so dropping any of them from the checkpoint fails here
(``make mutants`` plants exactly that).
"""

import pytest
import torch

from learner_impls import IMPLEMENTATIONS
from plasticity_lab.network import NetworkSpec

CHECKPOINT_CASES = {
    # rho * #eligible = 0.004 * 30 = 0.12 < 1: the coin branch; random utility: the UTIL stream
    "cbp-coins-random": ("cbp", dict(replacement_rate=0.004, maturity_threshold=5, util_type="random",
                                     accumulate=False), {}),
    "cbp-adam": ("cbp", dict(replacement_rate=0.05, maturity_threshold=5), dict(optimizer="adam", step_size=1e-3)),
    "adapted": ("adapted", dict(rho_low=0.05, rho_high=0.05, maturity_threshold=5, clip=1.0), {}),
    # [P]'s two-pass CBP: the high pass's own accumulator; per_pass: each pass's maturity clock
    "cbp-two-pass": ("cbp", dict(replacement_rate=0.03, high_replacement_rate=0.05, maturity_threshold=5,
                                 util_type="contribution", reinit="no_gain"), {}),
    "adapted-per-pass": ("adapted", dict(rho_low=[0.05, 0.0, 0.04], rho_high=[0.05, 0.03, 0.0], maturity_threshold=5,
                                         schedule="per_pass"), {}),
    "redo": ("redo", dict(reset_period=7, tau=0.6), {}),
    "shrink_perturb": ("shrink_perturb", dict(sigma=1e-3), {}),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
@pytest.mark.parametrize("impl_name", sorted(IMPLEMENTATIONS))
def test_member_checkpoint_mid_run_continues_exactly(impl_name, case, coin_draws):
    """A member checkpointed after 60 steps (through torch.save) and resumed in a fresh object ends
    60 steps later with exactly the weights of the uninterrupted run; the learner acted after the
    resume (and, for the coin case, flipped coins), so every generator it draws from must be in the
    checkpoint."""
    learner, hyper, opt = CHECKPOINT_CASES[case]
    spec = NetworkSpec.mlp(20, 30, 3, 5, "relu")
    g = torch.Generator().manual_seed(11)
    x, y = torch.rand(120, 20, generator=g, dtype=torch.float64), torch.randint(0, 5, (120,), generator=g)
    whole = IMPLEMENTATIONS[impl_name](spec, learner, hyper, seed=3, **opt)
    for s in range(60):
        whole.step(x[s : s + 1], y[s : s + 1])
    resumed = whole.restored(whole.checkpoint())
    whole.counts()
    coin_draws.clear()
    for s in range(60, 120):
        whole.step(x[s : s + 1], y[s : s + 1])
    acted = sum(sum(c) for c in whole.counts().values())
    coins = len(coin_draws)
    for s in range(60, 120):
        resumed.step(x[s : s + 1], y[s : s + 1])
    for (Wa, ba), (Wb, bb) in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(Wa, Wb) and torch.equal(ba, bb)
    if learner != "shrink_perturb":  # (S&P counts nothing; it perturbs every step)
        assert acted > 0, "the learner must act after the resume, or the checkpoint is not tested"
    if hyper.get("accumulate") is False:
        assert coins > 20 and len(coin_draws) == 2 * coins  # both runs flipped the same number of coins
