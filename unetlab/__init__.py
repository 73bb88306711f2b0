"""unetlab: learn defect segmentation with a UNet trained on synthetic industrial surfaces."""

__version__ = "0.1.0"

from .config import FULL, QUICK, RunSizes, is_quick, run_sizes

__all__ = ["__version__", "FULL", "QUICK", "RunSizes", "is_quick", "run_sizes"]
