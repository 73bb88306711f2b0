"""The command line end to end, in quick mode, and its errors."""

import json
import subprocess
import sys

import pytest

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
    (["train", "--quick", "--data", "no/such/folder"], "data folder not found: no/such/folder"),
    (["evaluate", "--checkpoint", "missing.pt"], "missing.pt"),
    (["generate", "--n", "2", "--size", "10", "--out", "x"], "size must be int in [32, 1024]; got 10"),
])
def test_bad_input_gets_one_clear_line_and_exit_code_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
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
    assert sizes == dataclasses.replace(QUICK, n_train=4) and label == "quick sizes, --n-train 4, --crop 0"


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
