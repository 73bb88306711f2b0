"""A small UNet for binary defect segmentation, built from named parts.

The layout follows milesial/Pytorch-UNet's ``unet_parts``: each idea is one small module.

    DoubleConv  (3x3 conv, no bias -> BatchNorm -> ReLU) x 2, same height and width
    Down        2x2 max-pool (halves H and W) -> DoubleConv
    Up          2x2 transposed conv, stride 2 (doubles H and W) -> concat the skip -> DoubleConv
    OutConv     1x1 conv to the output channels (logits)

With the default ``depth=2`` and ``base=16`` (shapes for a (B, 1, 256, 256) input)::

    encoder[0]  DoubleConv(1, 16)            -> (B, 16, 256, 256) ----skip----.
    encoder[1]  Down(16, 32)                 -> (B, 32, 128, 128) --skip--.   |
    bottleneck  Down(32, 64)                 -> (B, 64,  64,  64)         |   |
    decoder[0]  Up(64, 32) + skip            -> (B, 32, 128, 128) <-------'   |
    decoder[1]  Up(32, 16) + skip            -> (B, 16, 256, 256) <-----------'
    head        OutConv(16, 1)               -> (B,  1, 256, 256) logits

``forward`` returns logits; the sigmoid is applied by the loss (``BCEWithLogits``, numerically stable) and by
:meth:`UNet.predict_proba` at prediction time.

Speed on CPU: the model stores its weights in the channels-last memory format, which lets oneDNN run the
convolutions, BatchNorm and ReLU without layout conversions: 1.5 to 2 times faster training and inference on a
2-core CPU than the default layout (``benchmarks/bench_train.py`` measures it). Inputs need no conversion: the
first convolution returns channels-last activations whatever the input layout. The ReLUs work in place and the
convolutions before a BatchNorm have no bias, which saves memory traffic, the bottleneck on a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .checks import is_int, is_real

# What a config (e.g. one read from a checkpoint file) may ask for, checked before anything is allocated.
# depth 8 already needs images whose sides are multiples of 256; 100 million parameters are 400 MB of float32
# weights, about 850 times the tutorial's UNet(base=16, depth=2) and 13 times UNet(base=32, depth=4).
MAX_DEPTH = 8
MAX_PARAMETERS = 100_000_000


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) x 2: (B, in_ch, H, W) -> (B, out_ch, H, W).

    The convolutions have no bias: the BatchNorm that follows subtracts the mean, which would cancel it.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool then DoubleConv: (B, in_ch, H, W) -> (B, out_ch, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))


class Up(nn.Module):
    """Upsample, concatenate the encoder's skip, DoubleConv.

    (B, in_ch, H, W) and skip (B, in_ch/2, 2H, 2W) -> (B, out_ch, 2H, 2W), with ``out_ch = in_ch / 2``.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutConv(nn.Conv2d):
    """1x1 convolution to the output channels: (B, in_ch, H, W) -> (B, out_ch, H, W) logits."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, kernel_size=1)


class UNet(nn.Module):
    """UNet with ``depth`` downsamplings: encoder blocks, a bottleneck, decoder blocks with skip connections.

    Args:
        in_channels: channels of the input image (1 for grayscale).
        out_channels: channels of the logits (1 for a binary defect mask).
        base: feature channels at full resolution; they double at every downsampling
            (``base, 2*base, ..., 2**depth * base`` at the bottleneck).
        depth: number of 2x downsamplings; H and W of the input must be divisible by ``2**depth``.
        prior: the probability of "defect" a fresh model predicts everywhere, in (0, 0.5], or None for
            PyTorch's default initialisation (a head bias near 0: probability 0.5). See below.

    ``self.config`` holds the four architecture arguments as plain data, so ``UNet(**model.config)`` rebuilds
    the model (checkpoints store it beside the state_dict); ``prior`` only sets the initial head bias, which the
    weights then carry.

    Why a prior: defects cover about 1% of the pixels. A head that starts at probability 0.5 everywhere spends
    its first thousands of Adam steps (each moves a weight by about the learning rate) pulling the background
    down, and while the background is near 0.5 the soft Dice is flat (its denominator is all background) and
    teaches nothing. Starting the head bias at ``log(prior / (1 - prior))`` (RetinaNet's trick) removes that
    phase: on 16 real blowhole crops, Dice 0.09 after 25 steps from the default start, 0.93 with prior 0.01.
    With several classes the background's logit starts ``log((1 - prior) / prior)`` above the defect classes'.

    Bounds: ``depth`` is at most :data:`MAX_DEPTH` and the model at most :data:`MAX_PARAMETERS` parameters
    (:func:`parameter_count`, computed from the arguments before anything is allocated), so a config read from
    a file cannot make the program allocate until the kernel kills it. Anything else is a ValueError.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 16, depth: int = 2,
                 prior: float | None = 0.01) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base", base)):
            if not is_int(value) or value < 1:
                raise ValueError(f"UNet {name} must be an int >= 1; got {value!r}")
        if not is_int(depth) or not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"UNet depth must be an int in [1, {MAX_DEPTH}]; got {depth!r}")
        if prior is not None and not (is_real(prior) and 0 < prior <= 0.5):
            raise ValueError(f"UNet prior must be a probability in (0, 0.5] or None; got {prior!r}")
        in_channels, out_channels, base, depth = int(in_channels), int(out_channels), int(base), int(depth)
        n = parameter_count(in_channels, out_channels, base, depth)
        if n > MAX_PARAMETERS:
            raise ValueError(f"UNet(in_channels={in_channels}, out_channels={out_channels}, base={base}, "
                             f"depth={depth}) would have {n:,} parameters ({4 * n / 2**30:,.1f} GiB of float32 "
                             f"weights); unetlab builds at most {MAX_PARAMETERS:,} (MAX_PARAMETERS)")
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base=base, depth=depth)
        self.multiple = 2**depth
        widths = [base * 2**level for level in range(depth + 1)]  # channels at each resolution level

        self.encoder = nn.ModuleList(
            [DoubleConv(in_channels, base)] + [Down(widths[i - 1], widths[i]) for i in range(1, depth)]
        )
        self.bottleneck = Down(widths[depth - 1], widths[depth])
        self.decoder = nn.ModuleList([Up(widths[i + 1], widths[i]) for i in reversed(range(depth))])
        self.head = OutConv(base, out_channels)
        if prior is not None:
            with torch.no_grad():
                self.head.bias.fill_(math.log(prior / (1 - prior)) if out_channels == 1 else 0.0)
                if out_channels > 1:
                    self.head.bias[0] = math.log((1 - prior) / prior)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) float images -> (B, out_channels, H, W) logits (same dtype as the weights)."""
        self.check_input(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.head(x)

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Probabilities without gradients: (B, in_channels, H, W) -> (B, out_channels, H, W) in [0, 1].

        Sigmoid of the logits when ``out_channels == 1`` (probability of "defect" per pixel), softmax over the
        channels otherwise. It does not switch the mode: call ``model.eval()`` first so BatchNorm uses its
        running statistics instead of the statistics of this batch.
        """
        logits = self(x)
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    def check_input(self, x: Tensor) -> None:
        """One clear error unless ``x`` is a float (B, in_channels, H, W) tensor with H, W multiples of 2**depth."""
        if not isinstance(x, Tensor):
            raise TypeError(f"UNet expects a torch.Tensor; got {type(x).__name__}")
        shape_ok = (
            x.dim() == 4
            and x.shape[1] == self.config["in_channels"]
            and x.shape[2] % self.multiple == 0
            and x.shape[3] % self.multiple == 0
        )
        if not shape_ok or not x.is_floating_point():
            raise ValueError(
                f"UNet expects a floating-point input of shape (B, {self.config['in_channels']}, H, W) with H and W "
                f"divisible by {self.multiple}; got {x.dtype} of shape {tuple(x.shape)}"
            )


def parameter_count(in_channels: int, out_channels: int, base: int, depth: int) -> int:
    """Trainable parameters of ``UNet(in_channels, out_channels, base, depth)``, from the arguments alone.

    Arithmetic on plain ints, so it is instant for any size: :class:`UNet` checks it before building anything.
    Equals :func:`count_parameters` of the built model.
    """
    def double_conv(i: int, o: int) -> int:  # two bias-free 3x3 convs, two BatchNorms (weight and bias)
        return 9 * i * o + 9 * o * o + 4 * o

    widths = [base * 2**level for level in range(depth + 1)]
    down = double_conv(in_channels, base) + sum(double_conv(widths[i - 1], widths[i]) for i in range(1, depth + 1))
    up = sum(4 * widths[i + 1] * widths[i] + widths[i] + double_conv(2 * widths[i], widths[i]) for i in range(depth))
    return down + up + base * out_channels + out_channels  # + the 1x1 head with its bias


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_field(depth: int) -> int:
    """Width in input pixels of the window that can influence one output pixel of ``UNet(depth=depth)``.

    Walks the deepest path (the one through the bottleneck, which contains every shallower skip path) from one
    output pixel back to the input, tracking the interval [lo, hi] of pixels it depends on along one axis:
    a 3x3 conv widens it by 1 on each side, a 2x2 transposed conv with stride 2 maps output pixel p to input
    pixel p // 2, a 2x2 max-pool maps pooled pixel p to input pixels 2p and 2p + 1. The 1x1 head changes
    nothing. Because of the pooling grid the width depends on the output pixel's position modulo 2**depth;
    the widest one is returned (44 pixels for depth 2). Independent of ``base`` and the image size.
    """
    if not is_int(depth) or depth < 1:
        raise ValueError(f"receptive_field expects an int depth >= 1; got {depth!r}")
    widths = []
    for position in range(2**depth):
        lo = hi = position
        for _ in range(depth):  # decoder, from the output toward the bottleneck
            lo, hi = lo - 2, hi + 2  # DoubleConv
            lo, hi = lo // 2, hi // 2  # transposed conv
        lo, hi = lo - 2, hi + 2  # bottleneck DoubleConv
        for _ in range(depth):  # encoder, from the bottleneck toward the input
            lo, hi = 2 * lo, 2 * hi + 1  # max-pool
            lo, hi = lo - 2, hi + 2  # DoubleConv
        widths.append(hi - lo + 1)
    return max(widths)
