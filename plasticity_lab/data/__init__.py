"""Data: IDX image files (MNIST, Fashion-MNIST) and the online task streams built on them."""
