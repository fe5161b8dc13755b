"""The integer slots and codes the compiled step (kernel/step.py) and its Python callers share.

``flags`` (int64) and ``hyper`` (float64) are a member's settings for one call of
``train_member``; ``info`` (int64) is what the call returns.
"""

# flags[...] (one int64 vector per call)
(F_BATCH, F_LOSS, F_LEARNER, F_UTIL, F_ACCUMULATE, F_BIAS_CORRECTION, F_CLIP, F_MOMENTUM, F_DECAY, F_NEED_IN,
 F_NEED_OUT, F_FULL_CLAMP, F_SYNC_SUMS, F_PER_PASS) = range(14)
NUM_FLAGS = 14
LOSS_CROSS_ENTROPY, LOSS_SQUARED_ERROR = 0, 1
LEARNER_NONE, LEARNER_CBP, LEARNER_ADAPTED = 0, 1, 2
CLIP_NONE, CLIP_EVERY_STEP = 0, 1
# hyper[...] (float64)
H_ALPHA, H_DECAY, H_LAMBDA, H_MOMENTUM, H_CLIP = range(5)
NUM_HYPER = 5
# info[...] returned
I_NEXT, I_EVENT, I_COINS_USED = range(3)
NUM_INFO = 3
EVENT_NONE, EVENT_NEED_DRAWS, EVENT_NEED_COINS = 0, 1, 2
