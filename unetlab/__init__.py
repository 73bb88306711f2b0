"""unetlab: learn defect segmentation with a UNet trained on synthetic industrial surfaces.

The public API, in the order the tutorial meets it:

- ``synth``: :class:`DefectConfig`, :func:`make_sample` -> image and per-pixel class labels;
- ``data``: :class:`SyntheticDefects`, :func:`write_dataset`, :class:`DefectFolder`, :func:`make_loaders`;
- ``widgets``: :func:`defect_playground`, one slider per knob;
- ``model``: :class:`UNet`; ``losses``: :class:`BCEDiceLoss`; ``metrics``: Dice, IoU, per-class and instance
  recall;
- ``train``: :func:`fit`, checkpoints; ``evaluate``: :func:`predict`, :func:`evaluate`, :func:`threshold_sweep`;
- ``viz``: the pictures.
"""

__version__ = "0.1.0"

from .config import CARD_LR, DEMO_LR, DEMO_SCHEDULE, FULL, QUICK, RunSizes, is_quick, run_sizes
from .data import DefectFolder, SyntheticDefects, make_loaders, read_image, read_mask, write_dataset
from .evaluate import EvalResult, evaluate, predict, threshold_sweep
from .losses import BCEDiceLoss, dice_loss
from .metrics import (MetricAccumulator, class_recall, confusion_counts, instance_recall, per_image_scores,
                      pooled_scores)
from .model import UNet, count_parameters, receptive_field
from .synth import CLASS_NAMES, SURFACES, DefectConfig, make_sample, sample_rng
from .train import History, default_device, fit, load_checkpoint, save_checkpoint
from .viz import (CLASS_COLORS, label_overlay, overlay_errors, plot_history, plot_threshold_sweep, save_figure,
                  show_gallery, show_predictions, show_samples)
from .widgets import defect_playground, render_preview

__all__ = [
    "__version__", "FULL", "QUICK", "RunSizes", "is_quick", "run_sizes", "CARD_LR", "DEMO_LR", "DEMO_SCHEDULE",
    "CLASS_NAMES", "SURFACES", "DefectConfig", "make_sample", "sample_rng",
    "DefectFolder", "SyntheticDefects", "make_loaders", "read_image", "read_mask", "write_dataset",
    "defect_playground", "render_preview",
    "UNet", "count_parameters", "receptive_field", "BCEDiceLoss", "dice_loss",
    "MetricAccumulator", "class_recall", "confusion_counts", "instance_recall", "per_image_scores", "pooled_scores",
    "History", "default_device", "fit", "load_checkpoint", "save_checkpoint",
    "EvalResult", "evaluate", "predict", "threshold_sweep",
    "CLASS_COLORS", "label_overlay", "overlay_errors", "plot_history", "plot_threshold_sweep", "save_figure",
    "show_gallery", "show_predictions", "show_samples",
]
