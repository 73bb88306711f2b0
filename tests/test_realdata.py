"""Real images: the mask rule, both folder layouts, the verified download, fixed splits and random crops."""

import hashlib
import io
import zipfile

import cv2
import numpy as np
import pytest
import torch

from unetlab.augment import AugmentConfig
from unetlab.folders import DefectFolder, binarize_mask
from unetlab.real import (MT_ARCHIVE_SHA256, MT_ARCHIVE_URL, MT_COMMIT, REAL_DATA_ENV, REAL_DATA_HINT, RandomCrops,
                          download_magnetic_tile, real_data_root, real_splits)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _soft_mask(h, w, dtype=np.uint8):
    """A disc drawn 0/max with an anti-aliased (soft) edge, like the original magnetic-tile masks."""
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[:h, :w]
    distance = np.hypot(yy - h / 2, xx - w / 2) - min(h, w) / 4
    return (np.clip(0.5 - distance / 2, 0, 1) * top).round().astype(dtype)


# ----------------------------------------------------------------------------------------------------------------
# The mask rule


def test_binarize_mask_follows_the_documented_rule():
    zero_one = np.array([[0, 1], [1, 0]], np.uint8)
    assert binarize_mask(zero_one).tolist() == [[False, True], [True, False]]
    soft = np.array([[0, 1, 127, 128, 200, 255]], np.uint8)  # max > 1: half of the 8-bit range is the cut
    assert binarize_mask(soft).tolist() == [[False, False, False, True, True, True]]
    deep = np.array([[0, 1, 32767, 32768, 65535]], np.uint16)
    assert binarize_mask(deep).tolist() == [[False, False, False, True, True]]
    assert binarize_mask(np.array([[0, 1]], np.uint16)).tolist() == [[False, True]]  # 16-bit 0/1 masks
    assert binarize_mask(np.zeros((3, 4), np.uint8)).dtype == bool
    flags = np.array([[True, False]])
    assert binarize_mask(flags).tolist() == [[True, False]]


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 5, 3), np.uint8), r"single-channel .*colour mask"),
    (np.full((4, 5), 0.7, np.float32), "expected an integer mask"),
    (np.full((4, 5), 255, np.int64), "must be uint8 or uint16"),
    (np.full((4, 5), -1, np.int16), "must be >= 0"),
])
def test_binarize_mask_refuses_ambiguous_masks(array, message):
    with pytest.raises(ValueError, match=message):
        binarize_mask(array)


def _images_masks(root, images, masks):
    for name, array in images.items():
        _write(root / "images" / name, array)
    for name, array in masks.items():
        _write(root / "masks" / name, array)
    return root


def test_folder_auto_threshold_reads_soft_8_and_16_bit_masks_of_odd_sizes(tmp_path):
    soft8, soft16 = _soft_mask(37, 51), _soft_mask(29, 17, np.uint16)
    root = _images_masks(tmp_path, {"a.png": np.full((37, 51), 90, np.uint8),
                                    "b.png": np.full((29, 17), 40000, np.uint16)},
                         {"a.png": soft8, "b.png": soft16})
    with pytest.raises(ValueError, match="mask_threshold='auto'"):
        DefectFolder(root)[0]  # the default stays strict
    ds = DefectFolder(root, mask_threshold="auto")
    (image_a, mask_a), (image_b, mask_b) = ds[0], ds[1]
    assert image_a.shape == mask_a.shape == (1, 37, 51) and image_b.shape == mask_b.shape == (1, 29, 17)
    assert image_b.max().item() == pytest.approx(40000 / 65535)
    assert torch.equal(mask_a[0], torch.from_numpy(soft8 >= 128).float())
    assert torch.equal(mask_b[0], torch.from_numpy(soft16 >= 32768).float())
    assert 0 < mask_a.sum() < (soft8 > 0).sum()  # the soft rim is cut at half, not kept whole
    with pytest.raises(ValueError, match="mask_threshold must be None, 'auto' or an int >= 0"):
        DefectFolder(root, mask_threshold="otsu")


def test_colour_masks_are_an_error_and_colour_images_warn(tmp_path):
    colour = np.zeros((9, 13, 3), np.uint8)
    colour[..., 1] = 200
    root = _images_masks(tmp_path, {"a.jpg": colour, "b.png": colour},
                         {"a.png": _soft_mask(9, 13), "b.png": colour})
    ds = DefectFolder(root, mask_threshold="auto")
    with pytest.warns(UserWarning, match="colour image"):
        image, _ = ds[0]
    assert image.shape == (1, 9, 13)
    with pytest.warns(UserWarning, match="colour image"), pytest.raises(ValueError, match="single-channel"):
        ds[1]


# ----------------------------------------------------------------------------------------------------------------
# The original magnetic-tile layout and class names


def _mt_tree(root, classes=("Blowhole", "Free"), stems=("exp1_num_1", "exp2_num_7"), h=23, w=31):
    for name in classes:
        for stem in stems:
            mask = np.zeros((h, w), np.uint8) if name == "Free" else _soft_mask(h, w)
            _write(root / f"MT_{name}" / "Imgs" / f"{stem}.jpg", np.full((h, w), 100, np.uint8))
            _write(root / f"MT_{name}" / "Imgs" / f"{stem}.png", mask)
    return root


def test_magnetic_tile_layout_gets_unique_stems_and_folder_classes(tmp_path):
    root = _mt_tree(tmp_path, classes=("Blowhole", "Crack", "Free"))
    ds = DefectFolder(root, mask_threshold="auto")
    assert len(ds) == 6
    assert ds.stems[:2] == ["Blowhole__exp1_num_1", "Blowhole__exp2_num_7"]
    assert ds.classes == ["Blowhole"] * 2 + ["Crack"] * 2 + ["Free"] * 2
    image, mask = ds[ds.stems.index("Crack__exp2_num_7")]
    assert image.shape == mask.shape == (1, 23, 31) and mask.sum() > 0
    assert ds[ds.stems.index("Free__exp1_num_1")][1].sum() == 0
    with pytest.raises(ValueError, match="no labels/ folder"):
        DefectFolder(root, return_labels=True)


def test_magnetic_tile_layout_errors_name_the_file(tmp_path):
    root = _mt_tree(tmp_path)
    (root / "MT_Free" / "Imgs" / "exp1_num_1.png").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) in .*MT_\*/Imgs have no <stem>.png mask .*Free__exp1_num_1"):
        DefectFolder(root)
    _write(root / "MT_Free" / "Imgs" / "exp1_num_1.png", np.zeros((23, 31), np.uint8))
    (root / "MT_Blowhole" / "Imgs" / "exp2_num_7.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    ds = DefectFolder(root, mask_threshold="auto")
    with pytest.raises(ValueError, match=r"exp2_num_7.jpg: not a readable image"):
        ds[ds.stems.index("Blowhole__exp2_num_7")]
    (root / "MT_Empty").mkdir()
    with pytest.raises(FileNotFoundError, match="MT_Empty has no Imgs/ folder"):
        DefectFolder(root)


def test_classes_come_from_the_manifest_then_the_stem_prefix_then_defect(tmp_path):
    names = ["Crack__x", "Crack__y", "plain", "Fray__z"]
    root = _images_masks(tmp_path, {f"{n}.png": np.zeros((5, 6), np.uint8) for n in names},
                         {f"{n}.png": np.zeros((5, 6), np.uint8) for n in names})
    assert DefectFolder(root).classes == ["Crack", "Crack", "Fray", "defect"]  # sorted stems: C, C, F, p
    (root / "manifest.csv").write_text("stem,defect_class,width\nCrack__y,Break,6\nplain,Stain,6\n")
    assert DefectFolder(root).classes == ["Crack", "Break", "Fray", "Stain"]
    (root / "manifest.csv").write_text("stem,width\nplain,6\n")  # no defect_class column: ignored
    assert DefectFolder(root).classes[-1] == "defect"


def test_real_data_root_reads_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(REAL_DATA_ENV, raising=False)
    assert real_data_root() is None
    assert real_data_root(tmp_path) == tmp_path.resolve()
    assert real_data_root(tmp_path / "missing") is None
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path))
    assert real_data_root() == tmp_path.resolve()
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path / "missing"))
    assert real_data_root() is None
    assert "download_magnetic_tile" in REAL_DATA_HINT and REAL_DATA_ENV in REAL_DATA_HINT


# ----------------------------------------------------------------------------------------------------------------
# Download: tiny archives made here, read through file:// URLs


TOP = "Magnetic-tile-defect-datasets.-master"


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _encode(array, ext):
    ok, buffer = cv2.imencode(ext, array)
    assert ok
    return buffer.tobytes()


def _mt_members(top=TOP):
    image, mask = np.full((20, 14), 120, np.uint8), _soft_mask(20, 14)
    members = {f"{top}/README.md": b"magnetic tiles"}
    for name in ("Blowhole", "Free"):
        members[f"{top}/MT_{name}/Imgs/exp1_num_5.jpg"] = _encode(image, ".jpg")
        members[f"{top}/MT_{name}/Imgs/exp1_num_5.png"] = _encode(mask if name != "Free" else 0 * mask, ".png")
    return members


def test_download_verifies_unpacks_in_place_and_reuses_an_existing_copy(tmp_path):
    archive = _zip(tmp_path / "master.zip", _mt_members())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data" / "magnetic-tile"
    out = download_magnetic_tile(dest, url=archive.as_uri(), sha256=digest.upper(), progress=False)
    assert out == dest
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["magnetic-tile"]  # no temporary files left
    assert sorted(p.name for p in dest.iterdir()) == ["MT_Blowhole", "MT_Free", "README.md"]
    ds = DefectFolder(out, mask_threshold="auto")
    assert ds.classes == ["Blowhole", "Free"] and ds[0][1].sum() > 0 and ds[1][1].sum() == 0
    assert (dest.stat().st_mode & 0o777) == (tmp_path / "data").stat().st_mode & 0o777  # mkdir's, not 0700
    # A second call finds the dataset and does not download (this URL would fail).
    assert download_magnetic_tile(dest, url=(tmp_path / "gone.zip").as_uri(), progress=False) == dest
    # An archive without a top folder works too (here a single class), into an existing empty folder.
    flat = _zip(tmp_path / "flat.zip", {k.split("/", 1)[1]: v for k, v in _mt_members().items() if "Free" in k})
    (tmp_path / "empty").mkdir()
    unpacked = download_magnetic_tile(tmp_path / "empty", url=flat.as_uri(), sha256=None, allow_unverified=True,
                                      progress=False)
    assert DefectFolder(unpacked).classes == ["Free"]


def _corrupt_crc(path):
    data = bytearray(path.read_bytes())
    at = data.index(b"magnetic tiles")  # stored uncompressed, so the bytes are in the file as they are
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case, message", [
    ("crc", "CRC check failed for .*README.md"),
    ("traversal", r"unsafe member name '.*\.\./evil.txt'"),
    ("absolute", r"unsafe member name '/evil.txt'"),
    ("sha256", "sha256 mismatch: expected 0000"),
    ("layout", r"no MT_<Class>/Imgs/ folder with <stem>.jpg images beside <stem>.png masks"),
    ("not_zip", "not a valid zip archive"),
])
def test_download_failures_are_clear_and_leave_nothing_behind(tmp_path, case, message):
    src = tmp_path / "src"
    src.mkdir()
    members, sha256 = _mt_members(), None
    if case == "traversal":
        members[f"{TOP}/../evil.txt"] = b"x"
    elif case == "absolute":
        members["/evil.txt"] = b"x"
    elif case == "layout":
        members = {f"{TOP}/images/a.jpg": b"1", f"{TOP}/masks/a.png": b"2", f"{TOP}/MT_Crack/a.jpg": b"3"}
    elif case == "sha256":
        sha256 = "0" * 64
    archive = _zip(src / "master.zip", members, zipfile.ZIP_STORED)
    if case == "crc":
        _corrupt_crc(archive)
    elif case == "not_zip":
        archive.write_bytes(b"<html>404</html>")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=message):
        download_magnetic_tile(out / "mt", url=archive.as_uri(), sha256=sha256, allow_unverified=True, progress=False)
    assert list(out.iterdir()) == []  # neither dest nor a temporary file or folder
    assert not (tmp_path / "evil.txt").exists()


def test_download_refuses_a_non_empty_folder_and_reports_missing_urls(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no dataset"):
        download_magnetic_tile(tmp_path / "busy", url=(tmp_path / "x.zip").as_uri(), sha256=None,
                               allow_unverified=True,
                               progress=False)
    with pytest.raises(OSError, match="could not download"):
        download_magnetic_tile(tmp_path / "mt", url=(tmp_path / "x.zip").as_uri(), sha256=None,
                               allow_unverified=True,
                               progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_the_default_download_is_pinned_to_one_commit_and_one_checksum(tmp_path):
    assert len(MT_COMMIT) == 40 and MT_COMMIT.startswith("cc4eb53")  # the snapshot the local copy came from
    assert MT_ARCHIVE_URL == f"https://github.com/abin24/Magnetic-tile-defect-datasets./archive/{MT_COMMIT}.zip"
    assert len(MT_ARCHIVE_SHA256) == 64 and int(MT_ARCHIVE_SHA256, 16) >= 0
    archive = _zip(tmp_path / "a.zip", _mt_members())
    with pytest.raises(ValueError, match=r"sha256 mismatch: expected 592b.*pass the sha256 of the archive at that url"):
        download_magnetic_tile(tmp_path / "mt", url=archive.as_uri(), progress=False)  # the pinned checksum
    with pytest.raises(ValueError, match=r"needs the sha256 of the archive .* allow_unverified=True"):
        download_magnetic_tile(tmp_path / "mt", url=archive.as_uri(), sha256=None, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_a_zip_bomb_is_refused_from_its_declared_sizes_before_anything_is_unpacked(tmp_path):
    members = {**_mt_members(), f"{TOP}/padding.bin": b"\0" * 3_000_000}  # 3 MB that deflate to 3 KB
    archive = _zip(tmp_path / "bomb.zip", members)
    assert archive.stat().st_size < 100_000
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"would unpack to 3,00\d,\d{3} bytes, more than max_bytes=1,000,000"):
        download_magnetic_tile(tmp_path / "out" / "mt", url=archive.as_uri(), sha256=None, allow_unverified=True,
                               max_bytes=1_000_000, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_unpacking_stops_when_members_hold_more_than_they_declare(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "a.zip", _mt_members())
    real_open = zipfile.ZipFile.open

    def open_that_lies(self, name, *args, **kwargs):  # a member stream longer than its header says
        stream = real_open(self, name, *args, **kwargs)
        data = stream.read() + b"\0" * 2_000_000
        return io.BytesIO(data)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_that_lies)
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"unpacking stopped after 1,000,000 bytes \(max_bytes\)"):
        download_magnetic_tile(tmp_path / "out" / "mt", url=archive.as_uri(), sha256=None, allow_unverified=True,
                               max_bytes=1_000_000, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_download_larger_than_max_bytes_is_stopped(tmp_path):
    archive = _zip(tmp_path / "a.zip", {**_mt_members(), f"{TOP}/noise.bin": np.random.default_rng(0).bytes(300_000)})
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"a.zip: the download is larger than max_bytes=200,000"):
        download_magnetic_tile(tmp_path / "out" / "mt", url=archive.as_uri(), sha256=None, allow_unverified=True,
                               max_bytes=200_000, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# Fixed splits


CLASSES = ["A"] * 10 + ["B"] * 6 + ["C"] * 3 + ["D"]


def test_real_splits_are_disjoint_stratified_and_repeatable():
    pool, test = real_splits(CLASSES, test_fraction=0.5, seed=3)
    assert sorted(pool + test) == list(range(len(CLASSES)))  # disjoint and complete
    per_class = {c: sum(CLASSES[i] == c for i in test) for c in "ABCD"}
    assert per_class == {"A": 5, "B": 3, "C": 2, "D": 1}  # round(n * 0.5), halves up
    assert real_splits(CLASSES, 0.5, seed=3) == (pool, test)
    other_pool, other_test = real_splits(CLASSES, 0.5, seed=4)
    assert other_test != test and sorted(other_pool + other_test) == list(range(len(CLASSES)))
    pool_30, test_30 = real_splits(CLASSES, 0.3, seed=3)
    assert len(test_30) == 3 + 2 + 1 + 0


def test_real_split_pool_prefixes_are_class_balanced_and_nested():
    pool, _ = real_splits(CLASSES, seed=0)
    names = [CLASSES[i] for i in pool]
    assert names[:3] == ["A", "B", "C"] and names[3:5] == ["A", "B"]  # round-robin; C has 1 pool image, D none
    for k in range(1, len(pool) + 1):
        counts = [names[:k].count(c) for c in "AB"]
        assert max(counts) - min(counts) <= 1 or k > 2 * 3 + 1  # balanced until B's pool (3 images) runs out
    small, large = real_splits(CLASSES, seed=0)[0][:5], real_splits(CLASSES, seed=0)[0][:10]
    assert set(small) < set(large)
    a_orders = [[i for i in real_splits(CLASSES, seed=s)[0] if CLASSES[i] == "A"] for s in range(4)]
    assert any(order != sorted(order) for order in a_orders)  # each class's pool is shuffled, not in file order


def test_real_splits_validate_their_arguments():
    with pytest.raises(ValueError, match="non-empty sequence of class names"):
        real_splits([])
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\); got 1.0"):
        real_splits(CLASSES, test_fraction=1.0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        real_splits(CLASSES, seed=-1)


# ----------------------------------------------------------------------------------------------------------------
# Random crops


SCALE = 2 ** 14  # pixel codes / SCALE are exact in float32


def _coded(h, w, offset=0):
    """An image whose every pixel value is a unique code and a mask that is a function of that code."""
    code = offset + np.arange(h * w).reshape(h, w)
    return (code / SCALE).astype(np.float32), (code % 3 == 0) | (code % 7 == 0)


def _codes(image):
    return np.rint(image.numpy()[0] * SCALE).astype(int)


def _aligned(image, mask):
    code = _codes(image)
    return np.array_equal(mask.numpy()[0] > 0, (code % 3 == 0) | (code % 7 == 0))


def test_random_crops_are_repeatable_shaped_and_aligned():
    images, masks = zip(*(_coded(h, w, offset) for h, w, offset in ((40, 50, 0), (33, 90, 2000), (64, 37, 6000))))
    ds = RandomCrops(list(images), list(masks), n=12, size=32, seed=5)
    items = [ds[i] for i in range(12)]
    for image, mask in items:
        assert image.shape == mask.shape == (1, 32, 32) and image.dtype == mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert _aligned(image, mask)
    backwards = [ds[i] for i in reversed(range(12))][::-1]
    again = RandomCrops(list(images), list(masks), n=12, size=32, seed=5)
    for (a, m), (b, n), (c, o) in zip(items, backwards, (again[i] for i in range(12))):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(m, n) and torch.equal(m, o)
    other = RandomCrops(list(images), list(masks), n=12, size=32, seed=6)
    assert not all(torch.equal(items[i][0], other[i][0]) for i in range(12))
    corners = {_codes(image)[0, 0] for image, _ in items}
    assert len(corners) > 6  # crops come from different images and places
    assert {c // 2000 for c in corners} >= {0, 1, 3}  # all three images are used


def test_random_crops_pad_small_images_by_reflection():
    image, mask = _coded(7, 10)
    crop, crop_mask = RandomCrops([image], [mask], n=3, size=16, seed=0)[0]
    assert crop.shape == crop_mask.shape == (1, 16, 16)
    assert set(_codes(crop).ravel()) == set(range(70))  # every pixel is there, nothing invented
    assert _aligned(crop, crop_mask)
    rows = _codes(crop)[:, 0] // 10  # 9 rows to add: 4 mirrored above, 5 below
    assert rows.tolist() == [4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1]


def test_random_crops_apply_the_augmentation_jointly():
    image, mask = _coded(48, 48)
    exact = AugmentConfig.none().replace(flips=True, rot90=True)  # pixel-exact geometry only
    plain = RandomCrops([image], [mask], n=16, size=24, seed=1)
    flipped = RandomCrops([image], [mask], n=16, size=24, seed=1, augment=exact)
    changed = 0
    for i in range(16):
        a, m = flipped[i]
        assert _aligned(a, m)
        assert torch.equal(a, flipped[i][0])  # seeded: the same item twice is the same
        changed += not torch.equal(a, plain[i][0])
    assert changed >= 8  # 7 of 8 flip/rotation combinations change a crop
    full = RandomCrops([image], [mask], n=4, size=24, seed=1, augment=AugmentConfig())  # warps and photometry
    for i in range(4):
        a, m = full[i]
        assert a.shape == m.shape == (1, 24, 24) and set(m.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(a, full[i][0]) and torch.equal(m, full[i][1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n >= 1"),
    (dict(size=0), "size >= 1"),
    (dict(masks=[]), "as many masks as images"),
    (dict(masks=[np.zeros((5, 6), bool)]), r"same shape; got \(6, 8\) and \(5, 6\)"),
    (dict(images=[np.zeros((6, 8, 3), np.float32)]), "grayscale"),
    (dict(images=[np.full((6, 8), 255.0, np.float32)]), r"values in \[0, 1\]"),
    (dict(masks=[np.full((6, 8), 255, np.uint8)]), "bool or 0/1"),
    (dict(augment={"flips": True}), "AugmentConfig or None"),
])
def test_random_crops_validate_their_inputs(kwargs, message):
    args = dict(images=[np.zeros((6, 8), np.float32)], masks=[np.zeros((6, 8), bool)], n=4, size=4)
    with pytest.raises(ValueError, match=message):
        RandomCrops(**{**args, **kwargs})


# ----------------------------------------------------------------------------------------------------------------
# The real folder, when there is one


def test_the_real_folder_reads_whole_when_present():
    root = real_data_root()
    if root is None:
        pytest.skip(f"{REAL_DATA_ENV} is not set (or not a folder): no real images to read")
    ds = DefectFolder(root, mask_threshold="auto")
    assert len(ds) >= 100 and len(set(ds.stems)) == len(ds)
    assert {"Blowhole", "Crack", "Free"} <= set(ds.classes)
    if (root / "manifest.csv").is_file():
        assert len(ds) == len((root / "manifest.csv").read_text().strip().splitlines()) - 1
    empty = []
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == mask.shape and 0 <= image.min() and image.max() <= 1
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        empty.append(mask.sum().item() == 0)
    free = [e for e, c in zip(empty, ds.classes) if c == "Free"]
    assert free and all(free)  # defect-free images have empty masks
    assert sum(e for e, c in zip(empty, ds.classes) if c != "Free") <= 0.05 * (len(ds) - len(free))
    pool, test = real_splits(ds.classes, seed=0)
    assert not set(pool) & set(test) and len(pool) + len(test) == len(ds)


def test_random_crops_defect_share_places_crops_over_defects():
    image = np.zeros((200, 300), np.float32)
    mask = np.zeros((200, 300), bool)
    mask[150:153, 250:253] = True  # one small defect in a corner
    image[mask] = 1.0
    uniform = RandomCrops([image], [mask], n=200, size=32, seed=0)
    over = RandomCrops([image], [mask], n=200, size=32, seed=0, defect_share=1.0)
    half = RandomCrops([image], [mask], n=400, size=32, seed=0, defect_share=0.5)
    share = lambda ds: np.mean([ds[i][1].sum().item() > 0 for i in range(len(ds))])  # noqa: E731
    assert share(uniform) < 0.1 and share(over) == 1.0 and 0.35 < share(half) < 0.65
    for i in range(20):  # still aligned
        crop, crop_mask = over[i]
        assert torch.equal(crop > 0.5, crop_mask > 0.5)
    empty = RandomCrops([image], [np.zeros_like(mask)], n=5, size=32, defect_share=1.0)
    assert all(empty[i][1].sum() == 0 for i in range(5))  # no defect: a uniform crop, no error
    with pytest.raises(ValueError, match="defect_share in \\[0, 1\\]"):
        RandomCrops([image], [mask], n=1, defect_share=1.5)
