"""Image folders on disk: written atomically, read back as the very tensors made on the fly, clear errors."""

import errno
import json
import os
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch

import unetlab.folders as folders
from unetlab.data import SyntheticDefects
from unetlab.folders import DefectFolder, read_image, write_dataset
from unetlab.synth import DefectConfig

SMALL = DefectConfig(size=64)


def _stack(dataset):
    return [torch.stack(t) for t in zip(*(dataset[i] for i in range(len(dataset))))]


def test_folder_round_trip_gives_identical_tensors(tmp_path):
    out = write_dataset(tmp_path / "ds", 6, SMALL, seed=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "images", "labels", "masks"]
    on_the_fly = SyntheticDefects(6, SMALL, seed=2, return_labels=True)
    from_disk = DefectFolder(out, return_labels=True)
    assert len(from_disk) == 6
    for a, b in zip(_stack(on_the_fly), _stack(from_disk)):
        assert torch.equal(a, b)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["n"] == 6 and meta["seed"] == 2 and DefectConfig.from_dict(meta["config"]) == SMALL
    assert sum(meta["class_pixels"].values()) == 6 * 64 * 64


def test_write_refuses_to_mix_with_an_existing_folder_and_overwrite_replaces_it_whole(tmp_path):
    out = write_dataset(tmp_path / "ds", 4, SMALL, progress=False)
    with pytest.raises(FileExistsError, match="already exists and is not empty.*overwrite=True"):
        write_dataset(out, 2, SMALL, progress=False)
    write_dataset(out, 2, SMALL, seed=9, overwrite=True, progress=False)
    assert len(list((out / "images").iterdir())) == 2  # old files gone, not mixed
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folders left behind


def _failing_png_writes(monkeypatch, after: int, error: BaseException) -> None:
    """Make the dataset writer's ``after + 1``-th PNG write raise ``error``."""
    real_write, calls = folders._write_png, []

    def write_then_fail(path, array):
        calls.append(path)
        if len(calls) > after:
            raise error
        real_write(path, array)

    monkeypatch.setattr(folders, "_write_png", write_then_fail)


def test_an_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    _failing_png_writes(monkeypatch, 6, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ds", 5, SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_clear_error_and_leaves_the_old_dataset_whole(tmp_path, monkeypatch):
    out = write_dataset(tmp_path / "ds", 2, SMALL, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    _failing_png_writes(monkeypatch, 4, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(OSError, match=r"could not write the dataset .*ds: No space left on device; nothing was "
                                      r"changed") as caught:
        write_dataset(out, 3, SMALL, overwrite=True, progress=False)
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_overwrite_replaces_only_a_dataset_unetlab_wrote(tmp_path):
    thesis = tmp_path / "mine"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("four years of work")
    with pytest.raises(FileExistsError, match=r"refusing to replace .*mine: it is not a dataset written by unetlab "
                                              r"\(no dataset.json\)"):
        write_dataset(thesis, 2, SMALL, overwrite=True, progress=False)
    assert (thesis / "thesis.txt").read_text() == "four years of work"
    out = write_dataset(tmp_path / "ds", 2, SMALL, progress=False)
    (out / "notes.txt").write_text("keep me")
    (out / "masks" / "by_hand.tif").write_bytes(b"edited")
    with pytest.raises(FileExistsError, match=r"refusing to replace .*ds: it holds files unetlab did not write: "
                                              r"masks/by_hand.tif, notes.txt"):
        write_dataset(out, 2, SMALL, overwrite=True, progress=False)
    assert (out / "notes.txt").exists()
    with pytest.raises(FileExistsError, match="is a file"):
        write_dataset(thesis / "thesis.txt", 2, SMALL, overwrite=True, progress=False)


def test_a_written_dataset_keeps_the_permissions_of_the_folder_it_replaces(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o750)
    assert (write_dataset(empty, 1, SMALL, progress=False).stat().st_mode & 0o777) == 0o750
    (tmp_path / "plain").mkdir()  # a new folder gets what a plain mkdir gives (the umask), not mkdtemp's 0700
    new = write_dataset(tmp_path / "new", 1, SMALL, progress=False)
    assert new.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


# ----------------------------------------------------------------------------------------------------------------
# Reading folders of real or synthetic images


def _folder(tmp_path, images, masks):
    for sub, files in (("images", images), ("masks", masks)):
        (tmp_path / sub).mkdir(exist_ok=True)
        for name, array in files.items():
            assert cv2.imwrite(str(tmp_path / sub / name), array)
    return tmp_path


def _mask(h, w):
    m = np.zeros((h, w), np.uint8)
    m[2:5, 3:9] = 255
    return m


def test_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        DefectFolder(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="has no masks/ folder"):
        DefectFolder(tmp_path)
    _folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8), "b.png": np.zeros((8, 10), np.uint8)},
            {"a.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"1 image\(s\) in .*images have no mask in .*masks: b"):
        DefectFolder(tmp_path)


def test_folder_pairs_masks_named_with_a_suffix(tmp_path):
    images = {name: np.full((8, 10), 40 * i, np.uint8) for i, name in enumerate(("a.png", "b.jpg", "c.png", "d.png"))}
    masks = {"a.png": _mask(8, 10), "b_mask.png": _mask(8, 10), "c_GT.bmp": np.zeros((8, 10), np.uint8),
             "d_Label.png": _mask(8, 10), "unused_mask.png": _mask(8, 10)}
    ds = DefectFolder(_folder(tmp_path, images, masks))
    assert ds.stems == ["a", "b", "c", "d"]
    assert [p.name for p in ds.mask_paths] == ["a.png", "b_mask.png", "c_GT.bmp", "d_Label.png"]
    assert [bool(ds.arrays(i)[1].any()) for i in range(4)] == [True, True, False, True]


def test_folder_gives_a_mask_named_like_an_image_to_that_image_only(tmp_path):
    blank = np.zeros((8, 10), np.uint8)
    _folder(tmp_path, {"a.png": blank, "a_gt.png": blank}, {"a_gt.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"1 image\(s\) in .*images have no mask in .*masks: a \("):
        DefectFolder(tmp_path)


def test_folder_refuses_two_masks_for_one_image(tmp_path):
    _folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8)}, {"a.png": _mask(8, 10), "a_mask.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"2 masks could belong to the image 'a' \(a.png, a_mask.png\)"):
        DefectFolder(tmp_path)


def test_folder_missing_mask_error_names_the_accepted_names(tmp_path):
    _folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8)}, {"a_seg.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"masks: a \(a mask is named <stem> or <stem>_mask/_label/_gt"):
        DefectFolder(tmp_path)


def test_folder_rejects_a_mask_of_the_wrong_size(tmp_path):
    ds = DefectFolder(_folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8)}, {"a.png": _mask(9, 10)}))
    with pytest.raises(ValueError, match=r"mask .*a.png is 10x9 \(WxH\) but its image .*a.png is 10x8"):
        ds[0]


def test_folder_converts_colour_images_and_says_so(tmp_path):
    colour = np.zeros((8, 10, 3), np.uint8)
    colour[..., 2] = 255  # pure red in OpenCV's BGR order
    ds = DefectFolder(_folder(tmp_path, {"a.png": colour}, {"a.png": _mask(8, 10)}))
    with pytest.warns(UserWarning, match="colour image \\(3 channels\\) converted to grayscale"):
        image, mask = ds[0]
    assert image.shape == (1, 8, 10)
    assert image[0, 0, 0].item() == pytest.approx(76 / 255, abs=1 / 255)  # luma of red: 0.299 * 255


def test_folder_refuses_non_binary_masks_unless_given_a_threshold(tmp_path):
    soft = np.arange(80, dtype=np.uint8).reshape(8, 10) * 3
    ds = DefectFolder(_folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8)}, {"a.png": soft}))
    with pytest.raises(ValueError, match=r"expected a binary mask .*found 80 values \(0, 3, 6.*mask_threshold"):
        ds[0]
    _, mask = DefectFolder(tmp_path, mask_threshold=127)[0]
    assert torch.equal(mask[0], torch.from_numpy(soft > 127).float())


def test_folder_reads_16_bit_images_and_any_size(tmp_path):
    deep = np.full((37, 50), 65535 // 2, np.uint16)
    image, mask = DefectFolder(_folder(tmp_path, {"a.png": deep}, {"a.png": _mask(37, 50)}))[0]
    assert image.shape == mask.shape == (1, 37, 50)
    assert image.max().item() == pytest.approx(0.5, abs=1e-4)


def test_corrupt_image_file_is_named(tmp_path):
    _folder(tmp_path, {}, {"a.png": _mask(8, 10)})
    (tmp_path / "images" / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"a.png: not a readable image"):
        DefectFolder(tmp_path)[0]
    with pytest.raises(FileNotFoundError, match="no such image file"):
        read_image(tmp_path / "images" / "missing.png")


def test_read_image_warns_once_per_colour_file(tmp_path):
    path = tmp_path / "c.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_image(path)
    assert len(caught) == 1


def test_one_colour_warning_says_a_folder_of_colour_images_once_and_lets_other_warnings_through(tmp_path):
    for name in ("c1.png", "c2.png", "c3.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with folders.one_colour_warning():
            for name in ("c1.png", "c2.png", "c2.png", "c3.png"):  # a file read twice counts once
                read_image(tmp_path / name)
            warnings.warn("something else", RuntimeWarning)
    assert sorted(str(w.message) for w in caught) == [
        f"3 colour images converted to grayscale (the first: {tmp_path / 'c1.png'})", "something else"]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(FileNotFoundError):
        warnings.simplefilter("always")
        with folders.one_colour_warning():  # a failure half-way still says what was converted before it
            read_image(tmp_path / "c1.png")
            read_image(tmp_path / "missing.png")
    assert [str(w.message) for w in caught] == [f"{tmp_path / 'c1.png'}: colour image (3 channels) converted to "
                                                f"grayscale"]
    assert all(issubclass(w.category, folders.ColourConverted) for w in caught)



def _hollow_png(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` gray pixels but holds one row: a decoder that trusts its header
    allocates the whole image first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


def test_an_image_with_too_many_pixels_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(_hollow_png(12000, 12000))  # 144 MB of pixels from 100 bytes
    with pytest.raises(ValueError, match=r"big.png: 12000 x 12000 = 144,000,000 pixels; unetlab reads images of at "
                                         r"most 100,000,000 pixels"):
        read_image(tmp_path / "big.png")
    (tmp_path / "huge.png").write_bytes(_hollow_png(20000, 20000))  # beyond PIL's own limit, which answers first
    with pytest.raises(ValueError, match=r"huge.png: .*400000000 pixels.*unetlab reads images of at most 100,000,000"):
        read_image(tmp_path / "huge.png")
    _folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8)}, {"a.png": _mask(8, 10)})
    monkeypatch.setattr(folders, "MAX_IMAGE_PIXELS", 79)
    with pytest.raises(ValueError, match=r"a.png: 10 x 8 = 80 pixels; unetlab reads images of at most 79"):
        DefectFolder(tmp_path)[0]


def test_the_same_stem_in_two_formats_is_refused_naming_both_files(tmp_path):
    _folder(tmp_path, {"a.png": np.zeros((8, 10), np.uint8), "a.jpg": np.zeros((8, 10), np.uint8)},
            {"a.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"images: 2 files share the stem 'a' \(a.jpg, a.png\)"):
        DefectFolder(tmp_path)
    imgs = tmp_path / "mt" / "MT_Crack" / "Imgs"
    imgs.mkdir(parents=True)
    for name in ("x.jpg", "x.JPG", "x.png"):
        cv2.imwrite(str(imgs / name), np.zeros((8, 10), np.uint8))
    with pytest.raises(ValueError, match=r"Imgs: 2 files share the stem 'x' \(x.JPG, x.jpg\)"):
        DefectFolder(tmp_path / "mt")


def test_folder_reads_images_without_a_mask_as_good_parts_only_when_asked(tmp_path):
    blank = np.zeros((8, 10), np.uint8)
    _folder(tmp_path, {"a.png": blank, "ok_1.png": blank, "ok_2.png": blank}, {"a_mask.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"2 image\(s\) .*: ok_1, ok_2 .*missing_masks='good'"):
        DefectFolder(tmp_path)
    ds = DefectFolder(tmp_path, missing_masks="good")
    assert ds.stems == ["a", "ok_1", "ok_2"]
    assert ds.mask_paths[1:] == [None, None] and ds.classes == ["defect", "good", "good"]
    image, mask = ds[1]
    assert image.shape == mask.shape == (1, 8, 10) and mask.sum() == 0
    assert ds[0][1].sum() == 18
    with pytest.raises(ValueError, match=r"missing_masks must be one of \('error', 'good'\); got 'empty'"):
        DefectFolder(tmp_path, missing_masks="empty")


def test_folder_of_good_parts_needs_no_masks_folder_when_asked(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "g.png"), np.zeros((8, 10), np.uint8))
    with pytest.raises(FileNotFoundError, match="has no masks/ folder.*--missing-masks good"):
        DefectFolder(tmp_path)
    ds = DefectFolder(tmp_path, missing_masks="good")
    assert ds.classes == ["good"] and not ds.arrays(0)[1].any()


def _files(root, files):
    """Write ``files``: a path below ``root`` (e.g. "test/crack/000.png") -> a uint8 array; returns ``root``."""
    for name, array in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / name), array)
    return root


def test_folder_reads_the_mvtec_layout_with_good_parts_by_folder_name(tmp_path):
    blank, defect = np.zeros((8, 10), np.uint8), _mask(8, 10)
    root = _files(tmp_path / "bottle", {"train/good/000.png": blank, "train/good/001.png": blank,
                                        "test/good/000.png": blank, "test/crack/000.png": blank,
                                        "test/crack/001.png": blank, "ground_truth/crack/000_mask.png": defect,
                                        "ground_truth/crack/001_mask.png": defect})
    ds = DefectFolder(root)  # the strict default: good/ is defect-free by the layout, not a missing mask
    assert ds.stems == ["crack__test_000", "crack__test_001", "good__test_000", "good__train_000",
                        "good__train_001"]
    assert ds.classes == ["crack", "crack", "good", "good", "good"]
    assert [p.name if p else None for p in ds.mask_paths] == ["000_mask.png", "001_mask.png", None, None, None]
    assert [int(ds[i][1].sum()) for i in range(len(ds))] == [18, 18, 0, 0, 0]
    with pytest.raises(ValueError, match="MVTec AD layout, which has no labels/"):
        DefectFolder(root, return_labels=True)


def test_folder_in_the_mvtec_layout_refuses_a_defect_image_without_a_mask_and_orphan_masks(tmp_path):
    blank = np.zeros((8, 10), np.uint8)
    root = _files(tmp_path / "cat", {"test/good/000.png": blank, "test/hole/000.png": blank,
                                     "test/hole/001.png": blank, "ground_truth/hole/000_mask.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"1 image\(s\) in .*cat/\{train,test\}/<class>/ have no mask in "
                                         r".*cat/ground_truth/<class>/: hole__test_001 .*missing_masks='good'"):
        DefectFolder(root)
    ds = DefectFolder(root, missing_masks="good")  # its class stays the folder's, so good_parts() skips it
    assert ds.classes == ["good", "hole", "hole"] and ds.mask_paths[2] is None
    _files(root, {"ground_truth/scratch/000_mask.png": _mask(8, 10)})
    with pytest.raises(ValueError, match=r"ground_truth has mask folders with no image folder of the same name in "
                                         r"test/: scratch"):
        DefectFolder(root)


def test_a_folder_of_mvtec_categories_is_refused_naming_them(tmp_path):
    for category in ("bottle", "cable"):
        _files(tmp_path / category, {"test/good/000.png": np.zeros((8, 10), np.uint8)})
        (tmp_path / category / "ground_truth").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds 2 MVTec AD categories \(bottle, cable\): pass one of them, "
                                                r"e\.g\. .*bottle"):
        DefectFolder(tmp_path)


def test_folder_reads_images_and_masks_side_by_side_or_in_a_label_folder(tmp_path):
    blank, defect = np.zeros((8, 10), np.uint8), _mask(8, 10)
    ksdd2 = _files(tmp_path / "ksdd2", {"10000.png": blank, "10000_GT.png": defect, "10001.png": blank,
                                        "10001_GT.png": blank})
    ds = DefectFolder(ksdd2)
    assert ds.stems == ["10000", "10001"] and [p.name for p in ds.mask_paths] == ["10000_GT.png", "10001_GT.png"]
    assert ds.classes == ["defect", "defect"] and [int(ds[i][1].sum()) for i in range(2)] == [18, 0]
    dagm = _files(tmp_path / "dagm", {"0576.png": blank, "0577.png": blank, "Label/0576_label.png": defect})
    with pytest.raises(ValueError, match=r"1 image\(s\) in .*dagm have no mask beside them \(or in its Label/ "
                                         r"folder\): 0577 .*<stem>_mask/_label/_gt.*missing_masks='good'"):
        DefectFolder(dagm)
    ds = DefectFolder(dagm, missing_masks="good")
    assert ds.stems == ["0576", "0577"] and ds.classes == ["defect", "good"] and ds.mask_paths[1] is None
    assert ds.mask_paths[0].name == "0576_label.png" and int(ds[0][1].sum()) == 18
    _files(dagm, {"0576_label.png": defect})
    with pytest.raises(ValueError, match=r"the mask '0576_label' is both beside the images \(0576_label.png\) and "
                                         r"in Label/"):
        DefectFolder(dagm)
    with pytest.raises(ValueError, match="side-by-side layout, which has no labels/"):
        DefectFolder(ksdd2, return_labels=True)
