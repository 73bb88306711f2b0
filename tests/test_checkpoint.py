"""The checkpoint file against damage and hostile content: digest, bounds, NaN weights, missing fields, version 1."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch

from unetlab.checkpoint import (CHECKPOINT_FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint,
                                store_decision, weights_digest)
from unetlab.model import UNet


def tiny_unet(seed: int = 0) -> UNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(base=4).eval()


def _data_offset(path, member_suffix: str) -> tuple[int, int]:
    """(offset, length) in the file of the raw bytes of the zip member ending in ``member_suffix`` (torch stores
    tensor data uncompressed)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def _resave(path, payload) -> None:
    """Write ``payload`` as a checkpoint file with a digest that matches it (what a careful forger would do)."""
    payload["sha256"] = weights_digest(payload)
    torch.save(payload, path)


def test_one_flipped_bit_in_the_weights_is_one_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_unet())
    offset, length = _data_offset(path, "data/0")
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"m.pt: its weights do not match the sha256 stored with them: the file is "
                                         r"damaged"):
        load_checkpoint(path)


def test_the_digest_covers_the_weights_and_the_config_but_not_plain_fields_added_later(tmp_path):
    model = tiny_unet()
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["threshold"] = 0.4  # a plain field a later version may add or rewrite: the digest still holds
    torch.save(payload, tmp_path / "more.pt")
    assert load_checkpoint(tmp_path / "more.pt")[0].config == model.config
    payload["model_state"]["head.bias"] += 1
    torch.save(payload, tmp_path / "changed.pt")
    with pytest.raises(ValueError, match="do not match the sha256"):
        load_checkpoint(tmp_path / "changed.pt")


def test_nan_weights_are_refused_on_save_and_on_load(tmp_path):
    model = tiny_unet()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"refusing to write .*bad.pt: the weights hold NaN or infinite values "
                                         r"\(head.weight\)"):
        save_checkpoint(tmp_path / "bad.pt", model)
    assert not (tmp_path / "bad.pt").exists()
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", tiny_unet()), weights_only=True)
    payload["model_state"]["encoder.0.1.running_var"][0] = float("inf")
    _resave(tmp_path / "inf.pt", payload)
    with pytest.raises(ValueError, match=r"inf.pt holds NaN or infinite weights \(encoder.0.1.running_var\)"):
        load_checkpoint(tmp_path / "inf.pt")


def test_a_hostile_model_config_is_refused_before_anything_is_allocated(tmp_path):
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", tiny_unet()), weights_only=True)
    for change in (dict(depth=30), dict(base=10**7)):
        payload["model_config"] = {**tiny_unet().config, **change}
        _resave(tmp_path / "hostile.pt", payload)
        with pytest.raises(ValueError, match="invalid model_config"):
            load_checkpoint(tmp_path / "hostile.pt")


def test_a_tensor_larger_than_its_file_is_refused_before_it_is_touched(tmp_path):
    # A view with stride 0 costs a few bytes on disk but claims 80 GB: reading it whole would exhaust memory.
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", tiny_unet()), weights_only=True)
    payload["train_state"] = {"optimizer_state": {"state": {0: {"exp_avg": torch.zeros(1).expand(2 * 10**10)}}}}
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(ValueError, match=r"huge.pt: .*exp_avg.* claims 80,000,000,000 bytes but the file has only"):
        load_checkpoint(tmp_path / "huge.pt")


@pytest.mark.parametrize("missing", ["model_config", "model_state", "sha256"])
def test_a_checkpoint_without_a_required_field_is_one_clear_error(tmp_path, missing):
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", tiny_unet()), weights_only=True)
    del payload[missing]
    torch.save(payload, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=rf"partial.pt lacks the field\(s\) \['{missing}'\]"):
        load_checkpoint(tmp_path / "partial.pt")


def test_version_1_files_without_a_digest_still_load(tmp_path):
    model = tiny_unet(seed=3)
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", model), weights_only=True)
    assert payload["format_version"] == CHECKPOINT_FORMAT_VERSION == 2
    del payload["sha256"]
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    loaded, _ = load_checkpoint(tmp_path / "v1.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    payload["format_version"] = 3
    torch.save(payload, tmp_path / "v3.pt")
    with pytest.raises(ValueError, match="format version 3; this unetlab .* reads versions 1 and 2"):
        load_checkpoint(tmp_path / "v3.pt")


def test_store_decision_records_a_decision_and_leaves_the_rest_of_the_file_as_it_was(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_unet(), data_config={"n": 3}, epoch=2)
    before = read_checkpoint(path)
    assert load_checkpoint(path)[1]["threshold"] is None
    store_decision(path, 0.65)
    assert (load_checkpoint(path)[1]["threshold"], load_checkpoint(path)[1]["seed_threshold"]) == (0.65, None)
    store_decision(path, 0.4, 0.95)
    after = read_checkpoint(path)
    assert (after["threshold"], after["seed_threshold"]) == (0.4, 0.95)
    assert after["sha256"] == before["sha256"] and (after["data_config"], after["epoch"]) == ({"n": 3}, 2)
    assert all(torch.equal(after["model_state"][k], v) for k, v in before["model_state"].items())
    for threshold, seed, message in ((1.0, None, r"threshold must be a number in \[0, 1\)"),
                                     (0.5, 0.4, "seed"), (None, None, "needs a threshold")):
        with pytest.raises(ValueError, match=message):
            store_decision(path, threshold, seed)
    assert read_checkpoint(path)["threshold"] == 0.4  # a refused decision changes nothing
    with pytest.raises(FileNotFoundError):
        store_decision(tmp_path / "none.pt", 0.5)
