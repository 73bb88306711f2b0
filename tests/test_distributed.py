"""DistributedDataParallel under torchrun: the pieces in one process, and a real 2-process CPU run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from unetlab import cli, distributed
from unetlab.checkpoint import load_checkpoint, read_checkpoint
from unetlab.data import EpochShuffle
from unetlab.distributed import Launch, Shard, launched
from unetlab.model import UNet
from unetlab.train import fit

ROOT = Path(__file__).resolve().parents[1]


def shards(sampler_for_rank, size: int) -> list[list]:
    """One pass over each rank's Shard, each built on a fresh sampler as every process builds its own."""
    return [list(Shard(sampler_for_rank(), rank, size)) for rank in range(size)]


def test_ranks_together_take_the_batches_one_process_takes():
    one = list(EpochShuffle(13, seed=3))
    ranks = shards(lambda: EpochShuffle(13, seed=3), 2)
    assert [len(r) for r in ranks] == [7, 7]  # the same number of steps in both processes
    steps = [ranks[0][2 * step:2 * step + 2] + ranks[1][2 * step:2 * step + 2] for step in range(4)]  # 2 + 2
    expected = [one[0:4], one[4:8], one[8:12], [one[12], one[0]]]  # the short last step completed from the start
    assert [sorted(step) for step in steps] == [sorted(batch) for batch in expected]


def test_with_replacement_the_ranks_split_the_draws_of_one_process_epoch_after_epoch():
    def sampler():
        return RandomSampler(range(50), replacement=True, num_samples=12, generator=torch.Generator().manual_seed(7))

    single = sampler()
    one = [list(single), list(single)]  # two epochs: the generator moves on
    per_rank = [Shard(sampler(), rank, 3) for rank in range(3)]
    for epoch in range(2):
        drawn = [list(shard) for shard in per_rank]
        assert [d[k] for k in range(4) for d in drawn] == one[epoch]


def test_shard_refuses_a_sampler_that_would_shuffle_differently_in_each_process():
    with pytest.raises(ValueError, match="generator"):
        Shard(RandomSampler(range(10)), 0, 2)
    with pytest.raises(ValueError, match="rank"):
        Shard(EpochShuffle(10), 2, 2)


def test_shard_passes_the_epoch_on():
    shard = Shard(EpochShuffle(10, seed=1), 1, 2)
    shard.set_epoch(5)
    epoch5 = EpochShuffle(10, seed=1)
    epoch5.set_epoch(5)
    assert list(shard) == list(epoch5)[1::2]


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0"}, "not LOCAL_RANK, WORLD_SIZE"),
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "two"}, "whole numbers"),
    ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "inconsistent"),
])
def test_torchrun_variables_are_read_and_checked(env, message):
    assert launched({}) is None
    assert launched({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}) == Launch(rank=3, local_rank=1, world_size=4)
    with pytest.raises(ValueError, match=message):
        launched(env)


@pytest.fixture
def two_processes(monkeypatch):
    """Rank 1 of 2 as :mod:`unetlab.distributed` sees it, without starting anything."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)


def test_the_batch_size_is_the_total_over_the_processes(two_processes):
    data = TensorDataset(torch.rand(10, 1, 32, 32))
    loader = distributed.sharded_loader(data, 4, EpochShuffle(10))
    assert loader.batch_size == 2 and isinstance(loader.sampler, Shard) and loader.sampler.rank == 1
    with pytest.raises(ValueError, match="multiple of 2"):
        distributed.sharded_loader(data, 5, EpochShuffle(10))


def test_fit_under_torchrun_refuses_a_loader_that_is_not_sharded(two_processes):
    images = torch.rand(8, 1, 32, 32)
    loader = DataLoader(TensorDataset(images, (images > 0.5).float()), batch_size=4)
    with pytest.raises(ValueError, match="sharded_loader"):
        fit(UNet(base=4), loader, epochs=1, device="cpu", progress=False)


@pytest.mark.parametrize("device, message", [("mps", "CUDA \\(nccl\\) or the CPU"), ("cuda:1", "--device cuda")])
def test_process_group_refuses_devices_it_cannot_use_before_joining(monkeypatch, device, message):
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message), distributed.process_group(torch.device(device)):
        pass
    assert not torch.distributed.is_initialized()


def test_only_the_training_commands_run_under_torchrun(monkeypatch, tmp_path):
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match="`unetlab predict` runs in one process"):
        cli.main(["predict", "--checkpoint", "x.pt", "--out", str(tmp_path), str(tmp_path)])


def test_two_cpu_processes_train_one_model_resume_exactly_and_write_one_checkpoint(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes (torchrun, DistributedDataParallel over gloo)" in done.stdout
    assert done.stdout.count("checkpoint:") == 1  # rank 1 trained quietly
    load_checkpoint(tmp_path / "cli" / "model.pt")

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for run in ("straight", "resumed"):
        for name, tensor in rank0[run].items():  # parameters and BatchNorm buffers alike
            assert torch.equal(tensor, rank1[run][name]), f"{run}: rank 1 ends with other {name}"
    for name, tensor in rank0["straight"].items():
        assert torch.equal(tensor, rank0["resumed"][name]), f"resumed run differs in {name}"

    stored = read_checkpoint(tmp_path / "straight.pt")
    assert stored["history"]["train_loss"] and len(stored["history"]["val_dice"]) == 2
    assert stored["train_state"]["run"]["batch_size"] == 4  # the total; 2 per process
    assert stored["train_state"]["run"]["steps_per_epoch"] == 4  # as one process with 13 images in batches of 4
    for name, tensor in rank0["straight"].items():
        assert torch.equal(stored["train_state"]["model_state"][name], tensor)
    model, info = load_checkpoint(tmp_path / "straight.pt")
    assert info["epoch"] in (1, 2) and sorted(p.name for p in tmp_path.iterdir()) == [
        "cli", "rank0.pt", "rank1.pt", "resumed.pt", "straight.pt"]
