"""Shared test set-up."""

import matplotlib
import torch

matplotlib.use("Agg")  # no display in CI
# The unit tests use tiny tensors: one thread is fastest, and avoids two torch thread pools fighting over the
# cores when anything else runs beside the tests (measured: 7x slower under contention with the default).
torch.set_num_threads(1)
