"""unetlab: learn defect segmentation with a UNet trained on synthetic industrial surfaces.

The public API, in the order the tutorial meets it:

- ``synth``: :class:`DefectConfig`, :func:`make_sample` -> image and per-pixel class labels;
- ``data``: :class:`SyntheticDefects`, :func:`make_loaders`, :class:`EpochShuffle`; ``folders``:
  :func:`write_dataset`, :class:`DefectFolder`; ``real``: :func:`real_data_root`, :func:`download_magnetic_tile`,
  :class:`RealSet`, :func:`real_splits`, :class:`RandomCrops`;
- ``widgets``: :func:`defect_playground`, one slider per knob;
- ``model``: :class:`UNet`; ``losses``: :class:`BCEDiceLoss`; ``metrics``: Dice, IoU, class Dice, per-class and
  instance recall;
- ``train``: :func:`fit` -> :class:`History`; ``checkpoint``: :func:`save_checkpoint`, :func:`load_checkpoint`;
  ``device``: :func:`default_device`, :func:`keep_freed_memory_for_reuse`;
- ``evaluate``: :func:`predict`, :func:`evaluate`, :func:`threshold_sweep`;
- ``viz``: the pictures, and :func:`figures_dir`, where the chapters save them;
- beyond the seed: ``augment`` (joint image/mask augmentation), ``baseline`` (classical threshold + morphology),
  multi-class ``CEDiceLoss``, :func:`evaluate_multiclass`, :func:`predict_labels`;
- real use: ``pretrain`` (synthetic-only, optionally on your defect-free images: :class:`Backgrounds`),
  ``finetune`` (the real-data recipe), :func:`score_masks`; ``sim2real`` (the k-shot experiment).

Lower modules never import this file; the version is written once, in ``_version.py``.
"""

from ._version import __version__
from .config import (CARD_LR, DEMO_LR, DEMO_SCHEDULE, FULL, MULTICLASS, MULTICLASS_LR, QUICK, QUICK_MULTICLASS,
                     RunSizes, is_quick, run_sizes)
from .augment import DEFAULT_AUGMENT, AugmentConfig, augment
from .baseline import ClassicalBaseline, tune_baseline
from .checkpoint import load_checkpoint, save_checkpoint
from .decision import best_decision, defect_mask
from .data import EpochShuffle, SyntheticDefects, make_loaders, stack_items
from .device import default_device, keep_freed_memory_for_reuse
from .evaluate import (EvalResult, evaluate, evaluate_multiclass, predict, predict_labels, predict_masks, score_masks,
                       threshold_sweep)
from .finetune import FinetuneConfig, FinetuneResult, best_threshold, finetune
from .losses import BCEDiceLoss, CEDiceLoss, dice_loss, multiclass_dice_loss
from .folders import DefectFolder, binarize_mask, read_image, read_mask, write_dataset
from .history import History
from .metrics import (MetricAccumulator, class_dice, class_recall, confusion_counts, confusion_matrix,
                      instance_recall, per_image_scores, pooled_from_counts, pooled_scores, scores_from_confusion)
from .model import UNet, count_parameters, receptive_field
from .pretrain import PretrainConfig, PretrainResult, pretrain
from .real import (REAL_DATA_ENV, REAL_DATA_HINT, RandomCrops, RealSet, download_magnetic_tile, holdout_split,
                   load_backgrounds, real_data_root, real_splits)
from .sim2real import Experiment, pretrained_for_split, run_experiments
from .synth import CLASS_NAMES, PRESETS, SURFACES, Backgrounds, DefectConfig, make_sample, sample_rng
from .train import fit
from .viz import (CLASS_COLORS, figures_dir, label_overlay, overlay_errors, plot_confusion, plot_history,
                  plot_kshot, plot_threshold_sweep, save_figure, show_gallery, show_label_predictions, show_predictions,
                  show_real_predictions, show_samples)
from .widgets import defect_playground, render_preview

__all__ = [
    "__version__", "FULL", "QUICK", "RunSizes", "is_quick", "run_sizes", "CARD_LR", "DEMO_LR", "DEMO_SCHEDULE",
    "MULTICLASS", "QUICK_MULTICLASS", "MULTICLASS_LR",
    "CLASS_NAMES", "PRESETS", "SURFACES", "Backgrounds", "DefectConfig", "make_sample", "sample_rng",
    "DefectFolder", "EpochShuffle", "SyntheticDefects", "make_loaders", "read_image", "read_mask", "stack_items",
    "write_dataset",
    "REAL_DATA_ENV", "REAL_DATA_HINT", "RandomCrops", "binarize_mask", "download_magnetic_tile", "real_data_root",
    "real_splits", "holdout_split", "load_backgrounds",
    "AugmentConfig", "DEFAULT_AUGMENT", "augment", "ClassicalBaseline", "tune_baseline",
    "Experiment", "pretrained_for_split", "RealSet", "predict_masks", "run_experiments", "score_masks",
    "FinetuneConfig", "FinetuneResult", "best_threshold", "finetune", "PretrainConfig", "PretrainResult", "pretrain",
    "best_decision", "defect_mask",
    "defect_playground", "render_preview",
    "UNet", "count_parameters", "receptive_field", "BCEDiceLoss", "dice_loss", "CEDiceLoss", "multiclass_dice_loss",
    "MetricAccumulator", "class_dice", "class_recall", "confusion_counts", "confusion_matrix", "instance_recall",
    "per_image_scores", "pooled_from_counts", "pooled_scores", "scores_from_confusion",
    "History", "default_device", "fit", "keep_freed_memory_for_reuse", "load_checkpoint", "save_checkpoint",
    "EvalResult", "evaluate", "evaluate_multiclass", "predict", "predict_labels", "threshold_sweep",
    "CLASS_COLORS", "label_overlay", "overlay_errors", "plot_confusion", "plot_history", "plot_kshot",
    "plot_threshold_sweep", "show_real_predictions",
    "figures_dir", "save_figure", "show_gallery", "show_label_predictions", "show_predictions", "show_samples",
]
