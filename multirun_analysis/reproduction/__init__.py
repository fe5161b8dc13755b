"""The papers' experiments re-run by this framework: the targets (``targets``), the claims and the
rules that judge them (``rules``, ``claims``), and ``docs/REPRODUCTION.md`` (``document``)."""
