"""unetlab: learn defect segmentation with a UNet trained on synthetic industrial surfaces.

The public API, in the order the tutorial meets it:

- ``synth``: :class:`DefectConfig`, :func:`make_sample` -> image and per-pixel class labels;
- ``data``: :class:`SyntheticDefects`, :func:`write_dataset`, :class:`DefectFolder`, :func:`make_loaders`; real
  images: :func:`real_data_root`, :func:`download_magnetic_tile`, :func:`real_splits`, :class:`RandomCrops`;
- ``widgets``: :func:`defect_playground`, one slider per knob;
- ``model``: :class:`UNet`; ``losses``: :class:`BCEDiceLoss`; ``metrics``: Dice, IoU, per-class and instance
  recall;
- ``train``: :func:`fit`, checkpoints; ``evaluate``: :func:`predict`, :func:`evaluate`, :func:`threshold_sweep`;
- ``viz``: the pictures;
- beyond the seed: ``augment`` (joint image/mask augmentation), ``baseline`` (classical threshold + morphology),
  ``sim2real`` (score on real images, fine-tune on a few, the k-shot experiment), multi-class ``CEDiceLoss``,
  :func:`evaluate_multiclass`, :func:`predict_labels`.
"""

__version__ = "0.1.0"

from .config import (CARD_LR, DEMO_LR, DEMO_SCHEDULE, FULL, MULTICLASS, MULTICLASS_LR, QUICK, QUICK_MULTICLASS,
                     RunSizes, is_quick, run_sizes)
from .augment import DEFAULT_AUGMENT, AugmentConfig, augment
from .baseline import ClassicalBaseline, tune_baseline
from .data import (REAL_DATA_ENV, REAL_DATA_HINT, DefectFolder, RandomCrops, SyntheticDefects, binarize_mask,
                   download_magnetic_tile, make_loaders, read_image, read_mask, real_data_root, real_splits,
                   write_dataset)
from .evaluate import EvalResult, evaluate, evaluate_multiclass, predict, predict_labels, threshold_sweep
from .losses import BCEDiceLoss, CEDiceLoss, dice_loss, multiclass_dice_loss
from .metrics import (MetricAccumulator, class_recall, confusion_counts, confusion_matrix, instance_recall,
                      per_image_scores, pooled_scores, scores_from_confusion)
from .model import UNet, count_parameters, receptive_field
from .sim2real import Experiment, RealSet, finetune, predict_masks, run_experiments, score_masks
from .synth import CLASS_NAMES, PRESETS, SURFACES, DefectConfig, make_sample, sample_rng
from .train import History, default_device, fit, load_checkpoint, save_checkpoint
from .viz import (CLASS_COLORS, label_overlay, overlay_errors, plot_confusion, plot_history, plot_kshot,
                  plot_threshold_sweep, save_figure, show_gallery, show_label_predictions, show_predictions,
                  show_real_predictions, show_samples)
from .widgets import defect_playground, render_preview

__all__ = [
    "__version__", "FULL", "QUICK", "RunSizes", "is_quick", "run_sizes", "CARD_LR", "DEMO_LR", "DEMO_SCHEDULE",
    "MULTICLASS", "QUICK_MULTICLASS", "MULTICLASS_LR",
    "CLASS_NAMES", "PRESETS", "SURFACES", "DefectConfig", "make_sample", "sample_rng",
    "DefectFolder", "SyntheticDefects", "make_loaders", "read_image", "read_mask", "write_dataset",
    "REAL_DATA_ENV", "REAL_DATA_HINT", "RandomCrops", "binarize_mask", "download_magnetic_tile", "real_data_root",
    "real_splits",
    "AugmentConfig", "DEFAULT_AUGMENT", "augment", "ClassicalBaseline", "tune_baseline",
    "Experiment", "RealSet", "finetune", "predict_masks", "run_experiments", "score_masks",
    "defect_playground", "render_preview",
    "UNet", "count_parameters", "receptive_field", "BCEDiceLoss", "dice_loss", "CEDiceLoss", "multiclass_dice_loss",
    "MetricAccumulator", "class_recall", "confusion_counts", "confusion_matrix", "instance_recall", "per_image_scores",
    "pooled_scores", "scores_from_confusion",
    "History", "default_device", "fit", "load_checkpoint", "save_checkpoint",
    "EvalResult", "evaluate", "evaluate_multiclass", "predict", "predict_labels", "threshold_sweep",
    "CLASS_COLORS", "label_overlay", "overlay_errors", "plot_confusion", "plot_history", "plot_kshot",
    "plot_threshold_sweep", "show_real_predictions",
    "save_figure", "show_gallery", "show_label_predictions", "show_predictions", "show_samples",
]
