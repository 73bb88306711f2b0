"""Run by ``tests/test_distributed.py`` as ``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT``; not a test.

In one process group (a process joins it once), each process runs ``unetlab train`` through the command line,
then fits a tiny UNet for 2 epochs straight, and for 1 epoch then resumed to 2, and saves its final weights of
both as ``OUT/rank<RANK>.pt`` for the test to compare.
"""

import sys
from pathlib import Path

import torch

from unetlab import cli, distributed
from unetlab.config import RunSizes
from unetlab.data import make_loaders
from unetlab.model import UNet
from unetlab.synth import DefectConfig
from unetlab.train import fit

# 13 images: each process takes 7 (the last one padded), in batches of 2 of the total 4.
SIZES = RunSizes(n_train=13, n_val=4, n_test=1, epochs=2, batch_size=4, image_size=32)


def train(epochs: int, checkpoint: Path, resume: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = UNet(base=4, prior=0.1)
    loaders = make_loaders(DefectConfig(size=32), SIZES, seed=0)
    fit(model, loaders["train"], loaders["val"], epochs=epochs, lr=1e-2, device="cpu", progress=False,
        checkpoint=checkpoint, resume=resume, seed=0)
    return model.state_dict()


out = Path(sys.argv[1])
torch.set_num_threads(1)
with distributed.process_group(torch.device("cpu")):
    code = cli.main(["train", "--quick", "--base", "4", "--crop", "32", "--n-train", "8", "--n-val", "2",
                     "--epochs", "1", "--device", "cpu", "--out", str(out / "cli")])
    if code:
        raise SystemExit(f"unetlab train exited with {code}")
    straight = train(2, out / "straight.pt")
    train(1, out / "resumed.pt")
    resumed = train(2, out / "resumed.pt", resume=True)
    torch.save({"straight": straight, "resumed": resumed}, out / f"rank{distributed.rank()}.pt")
