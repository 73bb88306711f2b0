"""Synthetic datasets on the fly, their item contract, training windows and the loaders."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from unetlab.config import RunSizes
from unetlab.data import EpochShuffle, SyntheticDefects, make_loaders, stack_items, to_item
from unetlab.folders import write_dataset
from unetlab.synth import DefectConfig

SMALL = DefectConfig(size=64)


def _stack(dataset):
    return [torch.stack(t) for t in zip(*(dataset[i] for i in range(len(dataset))))]


def test_items_are_image_and_mask_tensors_with_the_documented_shapes():
    image, mask = SyntheticDefects(3, SMALL)[0]
    assert image.shape == mask.shape == (1, 64, 64)
    assert image.dtype == mask.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    image, mask, labels = SyntheticDefects(3, SMALL, return_labels=True)[1]
    assert labels.shape == (64, 64) and labels.dtype == torch.int64
    assert torch.equal(mask[0] > 0, labels > 0)


def test_on_the_fly_samples_do_not_depend_on_workers_or_order():
    ds = SyntheticDefects(8, SMALL, seed=5)
    direct = _stack(ds)
    reversed_order = [ds[i][0] for i in reversed(range(8))][::-1]
    assert torch.equal(direct[0], torch.stack(reversed_order))
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), direct[0])
    assert torch.equal(torch.cat([b[1] for b in batches]), direct[1])


def test_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="needs n >= 1 samples; got 0"):
        SyntheticDefects(0)
    with pytest.raises(ValueError, match="expects a DefectConfig"):
        SyntheticDefects(2, cfg={"size": 64})
    with pytest.raises(ValueError, match="needs n >= 1"):
        write_dataset(tmp_path / "x", -1, progress=False)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------------------------
# Loaders


def test_loaders_have_disjoint_splits_and_repeatable_shuffling():
    sizes = RunSizes(n_train=6, n_val=3, n_test=3, epochs=1, batch_size=3, image_size=64)
    loaders = make_loaders(sizes=sizes, seed=1)
    assert [len(loaders[s].dataset) for s in ("train", "val", "test")] == [6, 3, 3]
    train_images = _stack(loaders["train"].dataset)[0]
    test_images = _stack(loaders["test"].dataset)[0]
    assert not any(torch.equal(a, b) for a in train_images for b in test_images)
    first = [b[0] for b in make_loaders(sizes=sizes, seed=1)["train"]]
    again = [b[0] for b in make_loaders(sizes=sizes, seed=1)["train"]]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    images, masks, labels = next(iter(loaders["val"]))
    assert images.shape == (3, 1, 64, 64) and labels.shape == (3, 64, 64)


# ----------------------------------------------------------------------------------------------------------------
# Training windows of synthetic images


def _window_origin(full: np.ndarray, window: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``window`` occurs in ``full`` as a sub-array."""
    s = window.shape[0]
    return [(y, x) for y in range(full.shape[0] - s + 1) for x in range(full.shape[1] - s + 1)
            if np.array_equal(full[y:y + s, x:x + s], window)]


def test_a_window_is_image_mask_and_labels_of_one_place_of_the_sample():
    ds = SyntheticDefects(4, DefectConfig(size=64), seed=3, return_labels=True, crop=24)
    for i in range(len(ds)):
        image, mask, labels = ds[i]
        assert image.shape == mask.shape == (1, 24, 24) and labels.shape == (24, 24)
        full_image, full_labels = ds.sample(i)
        origins = _window_origin(full_image, np.rint(image[0].numpy() * 255).astype(np.uint8))
        assert any(np.array_equal(full_labels[y:y + 24, x:x + 24], labels.numpy()) for y, x in origins)
        assert torch.equal(mask[0], (labels > 0).float())


def test_windows_over_defects_hold_one_and_change_every_access_but_repeat_under_a_seed():
    ds = SyntheticDefects(6, DefectConfig(size=64, defect_free=0.0), seed=0, return_labels=True, crop=16,
                          defect_share=1.0)
    assert all(ds[i][2].any() for i in range(len(ds)) for _ in range(3))
    torch.manual_seed(5)
    first = [ds[i][0] for i in range(len(ds))]
    second = [ds[i][0] for i in range(len(ds))]
    torch.manual_seed(5)
    again = [ds[i][0] for i in range(len(ds))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


def test_loaders_crop_only_the_training_images():
    sizes = RunSizes(n_train=4, n_val=2, n_test=2, epochs=1, batch_size=2, image_size=64, crop=32)
    loaders = make_loaders(sizes=sizes)
    assert next(iter(loaders["train"]))[0].shape == (2, 1, 32, 32)
    assert next(iter(loaders["val"]))[0].shape == next(iter(loaders["test"]))[0].shape == (2, 1, 64, 64)


@pytest.mark.parametrize("crop", [0, 65, 32.0, True])
def test_a_window_larger_than_the_image_or_not_a_whole_pixel_count_is_refused(crop):
    with pytest.raises(ValueError, match=r"crop must be None or an int in \[1, 64\].*got"):
        SyntheticDefects(2, DefectConfig(size=64), crop=crop)
    with pytest.raises(ValueError, match=r"defect_share in \[0, 1\]; got 1.5"):
        SyntheticDefects(2, DefectConfig(size=64), crop=16, defect_share=1.5)
    with pytest.raises(ValueError, match="larger than the images"):
        make_loaders(DefectConfig(size=64), RunSizes(n_train=2, n_val=1, n_test=1, epochs=1, batch_size=1, crop=128))


def test_loaders_take_their_sizes_from_the_caller_never_from_the_run_mode(monkeypatch):
    monkeypatch.setenv("UNETLAB_QUICK", "1")
    sizes = RunSizes(n_train=5, n_val=2, n_test=3, epochs=1, batch_size=5, image_size=32)
    assert [len(loader.dataset) for loader in make_loaders(sizes=sizes).values()] == [5, 2, 3]
    with pytest.raises(ValueError, match=r"make_loaders needs sizes: pass unetlab.run_sizes\(\)"):
        make_loaders(DefectConfig(size=32))


def test_one_array_to_tensor_path_for_every_dataset():
    gray = np.array([[0, 128], [255, 64]], np.uint8)
    labels = np.array([[0, 2], [3, 0]], np.uint8)
    image, mask, ids = to_item(gray, labels, labels)
    assert image.shape == mask.shape == (1, 2, 2) and image.dtype == mask.dtype == torch.float32
    assert torch.equal(image[0], torch.from_numpy(gray).float() / 255)
    assert mask[0].tolist() == [[0.0, 1.0], [1.0, 0.0]] and ids.dtype == torch.int64 and ids.tolist() == labels.tolist()
    flipped = np.array([[0.25, 0.5]], np.float32)[:, ::-1]  # a view with a negative stride, as flips give
    image, mask = to_item(flipped, np.array([[True, False]]))
    assert image[0].tolist() == [[0.5, 0.25]] and mask[0].tolist() == [[1.0, 0.0]]


def test_stack_items_builds_each_item_once():
    ds = SyntheticDefects(4, SMALL, seed=1, return_labels=True)
    built = []
    original = ds.sample
    ds.sample = lambda i: built.append(i) or original(i)
    images, masks, labels = stack_items(ds, [3, 1])
    assert built == [3, 1]
    assert images.shape == masks.shape == labels.shape == (2, 64, 64)
    assert images.dtype == masks.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(images[0], ds[3][0][0].numpy())
    np.testing.assert_array_equal(masks[1], (labels[1] > 0).astype(np.float32))
    assert len(stack_items(SyntheticDefects(2, SMALL), [0])) == 2  # no labels: (images, masks)


def test_the_shuffle_of_an_epoch_depends_on_the_seed_and_the_epoch_only():
    sampler = EpochShuffle(10, seed=3)
    first, second = list(sampler), list(sampler)  # each pass is the next epoch
    assert sorted(first) == list(range(10)) and first != second
    sampler.set_epoch(1)
    assert list(sampler) == first  # epoch 1 again, as after a resume
    assert list(EpochShuffle(10, seed=3)) == first and list(EpochShuffle(10, seed=4)) != first
    keyed = EpochShuffle(10, seed=3, keyed=True)
    keyed.set_epoch(2)
    assert list(keyed) == [(2, i) for i in second]
    for bad in (dict(n=0), dict(n=3, seed=-1), dict(n=3, keyed=1)):
        with pytest.raises(ValueError, match="EpochShuffle"):
            EpochShuffle(**bad)


def test_windows_keyed_by_epoch_are_the_same_in_any_process_and_differ_between_epochs():
    ds = SyntheticDefects(4, SMALL, seed=1, return_labels=True, crop=16)
    torch.manual_seed(0)
    a = [ds[(1, i)][0] for i in range(4)]
    torch.manual_seed(123)  # torch's stream plays no part in a keyed window
    assert all(torch.equal(x, ds[(1, i)][0]) for i, x in enumerate(a))
    assert not all(torch.equal(x, ds[(2, i)][0]) for i, x in enumerate(a))
    sampler = EpochShuffle(4, seed=1, keyed=True)
    by_workers = []
    for workers in (0, 2):
        sampler.set_epoch(5)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
        by_workers.append(torch.cat([images for images, _, _ in loader]))
    assert torch.equal(*by_workers)


def test_make_loaders_refuses_splits_that_would_overlap():
    with pytest.raises(ValueError, match=r"n_train = 1,000,001 .* at most 1,000,000 .* would overlap"):
        make_loaders(SMALL, RunSizes(n_train=1_000_001, n_val=2, n_test=2, epochs=1, batch_size=2))
    with pytest.raises(ValueError, match=r"n_val = 2,000,000 .* at most 1,000,000"):
        make_loaders(SMALL, RunSizes(n_train=2, n_val=2_000_000, n_test=2, epochs=1, batch_size=2))
