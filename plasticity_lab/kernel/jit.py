"""How the kernel backend's code is compiled (numba), shared by every compiled function of kernel/.

- ``cache=True``: compiled once per machine, kept next to the sources (later runs load it in ~1 s);
- ``error_model="numpy"``: IEEE division (x / 0 is inf or NaN, no exception), as torch;
- ``_nrt=False``: no reference counting. Numba counts the references to an array's memory for
  every view it makes (a slice, a reshape), each count an atomic operation behind a function
  call; in the training loop these were ~20% of a step's time (sampled with ``perf``). Without
  it, compiled code cannot allocate: every work array comes from the caller
  (``KernelPopulation._scratch``), and views must not outlive the arrays they view (they never
  leave a call).

``FAST``: the floating-point liberties some loops take so that reductions (dot products, |w|
sums) vectorise: reassociation and fused multiply-add only; NaN and inf keep their IEEE meaning,
so a diverging member shows. The results differ from a sequential sum within rounding (tests
compare the kernel with the reference learner at float32 rounding, float64 at ~1e-10) and are
the same in every run on one machine (the same compiled code).
"""

JIT = dict(cache=True, error_model="numpy", _nrt=False)
INLINE = dict(JIT, inline="always")
FAST = {"reassoc", "contract"}
