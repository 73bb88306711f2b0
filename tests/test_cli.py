"""The command line end to end, in quick mode, and its errors."""

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import unetlab.checkpoint
import unetlab.cli as cli
import unetlab.folders
from unetlab.io import write_json

from unetlab.cli import main


def test_demo_runs_end_to_end_and_writes_results_and_figures(tmp_path, capsys):
    out, figures = tmp_path / "run", tmp_path / "figures"
    assert main(["demo", "--quick", "--out", str(out), "--figures", str(figures)]) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("dice", "iou", "precision", "recall", "instance_recall"):
        assert 0.0 <= results["held_out"][key] <= 1.0
    assert set(results["class_recall"]) == {"scratch", "crack", "stain"}
    assert results["threshold_chosen_on"] == "validation set"
    assert results["training"]["epochs"] == 1 and results["seconds"]["total"] > 0
    assert sorted(p.name for p in figures.iterdir()) == [
        "predictions.png", "samples.png", "threshold_sweep.png", "training_curves.png", "worst.png"]
    printed = capsys.readouterr().out
    assert "Held-out synthetic test set" in printed and "recall: stain" in printed
    info = unetlab.checkpoint.load_checkpoint(out / "model.pt")[1]  # predict and evaluate use it, not 0.5
    assert (info["threshold"], info["seed_threshold"]) == (results["threshold"], None)

    # The checkpoint the demo saved can be evaluated again from the command line.
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--quick", "--figures", str(figures),
                 "--out", str(scores)]) == 0
    assert 0.0 <= json.loads(scores.read_text())["summary"]["dice"] <= 1.0


def test_generate_writes_a_dataset_and_refuses_to_mix(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["generate", "--n", "3", "--size", "64", "--out", str(out)]) == 0
    assert len(list((out / "masks").iterdir())) == 3
    assert main(["generate", "--n", "3", "--size", "64", "--out", str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--quick", "--lr", "0"], "lr must be a finite number > 0; got 0.0"),
    (["train", "--quick", "--device", "gpu"], "unknown device 'gpu'"),
    (["train", "--quick", "--n-train", "2000000"], "each split holds at most 1,000,000"),
    (["evaluate", "--checkpoint", "weights.pt"], "weights.pt lacks the field(s) ['model_config', 'model_state'"),
    (["generate", "--n", "2", "--size", "32", "--out", "thesis", "--overwrite"], "refusing to replace thesis"),
    (["train", "--quick", "--data", "no/such/folder"], "data folder not found: no/such/folder"),
    (["evaluate", "--checkpoint", "missing.pt"], "missing.pt"),
    (["generate", "--n", "2", "--size", "10", "--out", "x"], "size must be int in [32, 1024]; got 10"),
])
def test_bad_input_gets_one_clear_line_and_exit_code_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "unetlab.checkpoint", "format_version": 2}, "weights.pt")
    Path("thesis").mkdir()
    Path("thesis/thesis.txt").write_text("mine")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_python_dash_m_unetlab_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "unetlab", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in done.stdout and "generate" in done.stdout and "evaluate" in done.stdout


def test_run_sizes_come_from_config_and_the_log_names_quick_runs_with_overrides(monkeypatch):
    import dataclasses

    from unetlab.cli import _sizes, build_parser
    from unetlab.config import FULL, QUICK, QUICK_MULTICLASS

    monkeypatch.delenv("UNETLAB_QUICK", raising=False)
    parse = build_parser().parse_args
    assert _sizes(parse(["demo"])) == (FULL, "full sizes")
    assert _sizes(parse(["demo", "--quick", "--epochs", "2"])) == (dataclasses.replace(QUICK, epochs=2),
                                                                    "quick sizes, --epochs 2")
    assert _sizes(parse(["train", "--task", "multiclass", "--quick"]))[0] == QUICK_MULTICLASS
    monkeypatch.setenv("UNETLAB_QUICK", "1")
    sizes, label = _sizes(parse(["train", "--n-train", "4", "--crop", "0"]))
    assert sizes == dataclasses.replace(QUICK, n_train=4, crop=None) and label == "quick sizes, --n-train 4, --crop 0"


def test_the_allocator_setting_is_explicit_said_and_can_be_refused(monkeypatch, capsys):
    import unetlab.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory_for_reuse", lambda: calls.append(1) or True)
    cli._tune_allocator(cli.build_parser().parse_args(["train", "--device", "cpu"]))
    assert calls == [1] and "glibc keeps freed memory" in capsys.readouterr().out
    cli._tune_allocator(cli.build_parser().parse_args(["train", "--device", "cpu", "--no-keep-freed-memory"]))
    assert calls == [1] and capsys.readouterr().out == ""
    done = subprocess.run([sys.executable, "-m", "unetlab", "demo", "--help"], capture_output=True, text=True,
                          check=True)
    assert "--keep-freed-memory" in done.stdout and "process-wide" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "fit", lambda *a, **k: pytest.fail("trained"))
    assert main(["train", "--quick", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda' is not available here" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["demo", "--threshold", "7"], ["demo", "--threshold", "-0.1"],
                                  ["evaluate", "--checkpoint", "m.pt", "--threshold", "1"],
                                  ["demo", "--threshold", "nan"]])
def test_thresholds_outside_0_1_are_refused_by_the_parser(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as done:
        main([*argv, "--quick"])
    assert done.value.code == 2
    assert "--threshold: expected a number in [0, 1)" in capsys.readouterr().err


def test_train_has_no_threshold_to_ignore(monkeypatch, capsys):
    monkeypatch.setattr(cli, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit):
        main(["train", "--quick", "--threshold", "0.5"])
    assert "unrecognized arguments: --threshold" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_written_is_found_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "fit", lambda *a, **k: pytest.fail("trained before checking --out"))
    (tmp_path / "file").write_text("not a folder")
    for argv in (["train", "--quick", "--out", str(tmp_path / "file" / "run")],
                 ["demo", "--quick", "--out", str(tmp_path / "run"), "--figures", str(tmp_path / "file" / "f")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "error: cannot write to" in err and "nothing was started" in err and "Traceback" not in err


def test_a_full_disk_while_writing_is_one_clear_line(tmp_path, monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(unetlab.folders, "_write_png", disk_full)
    assert main(["generate", "--n", "2", "--size", "32", "--out", str(tmp_path / "ds")]) == 2
    assert "error: could not write the dataset" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(unetlab.checkpoint.torch, "save", disk_full)
    assert main(["train", "--quick", "--n-val", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "model.pt: No space left on device; its previous content, if any, is unchanged" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "model.pt").exists()


def test_resume_with_other_settings_is_refused_and_the_checkpoint_kept(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--quick", "--n-train", "4", "--n-val", "2", "--out", out]) == 0
    before = (tmp_path / "run" / "model.pt").read_bytes()
    for extra, message in ((["--lr", "1e-3"], "it was trained with lr=0.003; got lr=0.001"),
                           (["--preset", "randomized"], "its data_config differs in"),
                           (["--batch-size", "2"], "it was trained with batch_size=4; got batch_size=2")):
        assert main(["train", "--quick", "--n-train", "4", "--n-val", "2", "--out", out, "--resume", *extra]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "run" / "model.pt").read_bytes() == before


def test_results_json_holds_null_for_undefined_scores_never_bare_nan(tmp_path):
    write_json(tmp_path / "r.json", {"a": float("nan"), "b": {"c": [1.0, math.inf]}, "d": 0.5})

    def no_constants(name):
        raise AssertionError(f"bare {name} in JSON")

    loaded = json.loads((tmp_path / "r.json").read_text(), parse_constant=no_constants)
    assert loaded == {"a": None, "b": {"c": [1.0, None]}, "d": 0.5,
                      "undefined_values": {"a": "nan", "b.c[1]": "inf"}}
