"""The readable learners, one module per learner (named after it), each the ground truth for the
engine's learner of the same name (base.py: their hooks). Which class implements a learner is
declared with it (plasticity_lab/learners.py)."""
