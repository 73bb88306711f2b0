import pytest
import torch

from unetlab.model import MAX_DEPTH, MAX_PARAMETERS, UNet, count_parameters, parameter_count, receptive_field


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_forward_shape_and_logits():
    model = UNet(base=4)
    x = _rand(2, 1, 32, 48)
    out = model(x)
    assert out.shape == (2, 1, 32, 48)
    assert out.dtype == torch.float32
    # Logits, not probabilities: BCE on logits needs values outside [0, 1] to be possible and here they occur.
    assert (out < 0).any() or (out > 1).any()


def test_card_layout_two_down_bottleneck_two_up():
    model = UNet()
    assert model.config == dict(in_channels=1, out_channels=1, base=16, depth=2)
    assert len(model.encoder) == 2 and len(model.decoder) == 2
    assert model.encoder[0][0].out_channels == 16
    assert model.encoder[1][1][0].out_channels == 32
    assert model.bottleneck[1][3].out_channels == 64
    assert model.decoder[0].up.out_channels == 32 and model.decoder[1].up.out_channels == 16
    assert model.head.out_channels == 1
    assert all(not m.bias for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))


def test_weights_and_activations_are_channels_last():
    """The CPU speed comes from oneDNN's channels-last kernels: no layout conversion inside the network."""
    model = UNet(base=4)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    seen = []
    model.decoder[-1].register_forward_hook(lambda module, inputs, out: seen.append(out))
    model(_rand(2, 1, 16, 16))
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_rebuild_from_config_gives_same_output():
    model = UNet(in_channels=3, out_channels=2, base=4, depth=3).eval()
    clone = UNet(**model.config).eval()
    clone.load_state_dict(model.state_dict())
    x = _rand(1, 3, 16, 16)
    torch.testing.assert_close(clone(x), model(x))


def test_other_depths_and_channels():
    for depth in (1, 3):
        model = UNet(in_channels=3, out_channels=2, base=2, depth=depth)
        assert model(_rand(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_predict_proba_sigmoid_and_softmax_without_grad():
    x = _rand(2, 1, 16, 16)
    binary = UNet(base=2).eval()
    probs = binary.predict_proba(x)
    torch.testing.assert_close(probs, torch.sigmoid(binary(x)))
    assert not probs.requires_grad
    multi = UNet(out_channels=3, base=2).eval()
    probs = multi.predict_proba(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16))
    assert not multi.training and not binary.training


def test_training_step_reduces_loss_and_gradients_reach_first_layer():
    model = UNet(base=4)
    x = _rand(2, 1, 32, 32)
    y = (x > 0.7).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.encoder[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "x, expected",
    [
        (torch.zeros(1, 3, 32, 32), r"\(B, 1, H, W\).*divisible by 4; got torch.float32 of shape \(1, 3, 32, 32\)"),
        (torch.zeros(2, 1, 30, 32), r"divisible by 4; got torch.float32 of shape \(2, 1, 30, 32\)"),
        (torch.zeros(1, 32, 32), r"shape \(B, 1, H, W\).*got torch.float32 of shape \(1, 32, 32\)"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.uint8), r"floating-point input.*got torch.uint8"),
    ],
)
def test_bad_input_gets_one_clear_error(x, expected):
    with pytest.raises(ValueError, match=expected):
        UNet(base=2)(x)


def test_non_tensor_input():
    with pytest.raises(TypeError, match="UNet expects a torch.Tensor; got ndarray"):
        UNet(base=2)(_rand(1, 1, 8, 8).numpy())


@pytest.mark.parametrize("kwargs", [dict(base=-1), dict(in_channels=1.5), dict(out_channels=True)])
def test_bad_constructor_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"UNet {name} must be an int >= 1"):
        UNet(**kwargs)


@pytest.mark.parametrize("depth", [0, 30, 10**9, 2.0])
def test_depth_is_bounded(depth):
    with pytest.raises(ValueError, match=rf"UNet depth must be an int in \[1, {MAX_DEPTH}\]; got {depth!r}"):
        UNet(depth=depth)


@pytest.mark.parametrize("kwargs", [dict(base=10**6), dict(base=512, depth=8), dict(in_channels=10**9)])
def test_a_model_too_large_to_allocate_is_refused_before_any_allocation(kwargs):
    # Each of these would ask for gigabytes to terabytes; the check is arithmetic on the config, so it is instant.
    with pytest.raises(ValueError, match=r"would have [\d,]+ parameters .* at most 100,000,000"):
        UNet(**kwargs)
    assert parameter_count(**{**dict(in_channels=1, out_channels=1, base=16, depth=2), **kwargs}) > MAX_PARAMETERS


@pytest.mark.parametrize("config", [dict(), dict(base=3, depth=1),
                                    dict(in_channels=2, out_channels=4, base=8, depth=4)])
def test_parameter_count_from_the_config_equals_the_built_model(config):
    model = UNet(**config)
    assert parameter_count(**model.config) == count_parameters(model)


def test_count_parameters_by_hand():
    model = UNet(in_channels=1, out_channels=1, base=2, depth=1)

    def double_conv(i, o):  # two bias-free 3x3 convs + two BatchNorms (weight and bias)
        return 9 * i * o + 2 * o + 9 * o * o + 2 * o

    expected = (
        double_conv(1, 2)  # encoder[0]
        + double_conv(2, 4)  # bottleneck
        + (4 * 2 * 4 + 2)  # transposed conv 4 -> 2, kernel 2x2, with bias
        + double_conv(4, 2)  # decoder conv after the concat
        + (2 * 1 + 1)  # 1x1 head with bias
    )
    assert count_parameters(model) == expected
    model.head.requires_grad_(False)
    assert count_parameters(model) == expected - 3


def _empirical_receptive_field(depth: int) -> int:
    """Widest extent of nonzero input gradient of one output pixel, over the 2**depth pixel positions.

    Eval mode (BatchNorm then mixes no pixels across the batch) and a union over a few random inputs, since
    ReLU and max-pool let gradient through only where they are active.
    """
    size, repeats = 120, 2  # 120: divisible by 8, and the widest field (100 px at depth 3) fits around the centre
    model = UNet(base=8, depth=depth).eval()
    positions = [size // 2 + k for k in range(2**depth)]
    x = _rand(len(positions) * repeats, 1, size, size, seed=depth).requires_grad_(True)
    out = model(x)
    picked = sum(out[i, 0, p, p] for i, p in enumerate(positions * repeats))
    (grad,) = torch.autograd.grad(picked, x)
    grad = grad[:, 0].reshape(repeats, len(positions), size, size).abs().sum(0)
    widths = []
    for g in grad:
        for axis in (0, 1):
            nonzero = torch.nonzero(g.sum(axis)).flatten()
            widths.append(int(nonzero.max() - nonzero.min() + 1))
    return max(widths)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_matches_gradient_measurement(depth):
    assert receptive_field(depth) == _empirical_receptive_field(depth)


def test_receptive_field_values_and_bad_depth():
    assert receptive_field(2) == 44
    assert receptive_field(1) < receptive_field(2) < receptive_field(3)
    with pytest.raises(ValueError, match="receptive_field expects an int depth >= 1; got 0"):
        receptive_field(0)


def test_a_fresh_model_starts_at_the_prior_defect_probability():
    x = _rand(2, 1, 32, 32)
    torch.manual_seed(0)
    fresh = UNet(base=4).eval()
    assert fresh.predict_proba(x).mean().item() < 0.03  # prior 0.01: background, almost everywhere
    torch.manual_seed(0)
    default_init = UNet(base=4, prior=None).eval()
    assert 0.3 < default_init.predict_proba(x).mean().item() < 0.7
    torch.manual_seed(0)
    multi = UNet(out_channels=4, base=4, prior=0.01).eval()
    assert multi.predict_proba(x)[:, 0].mean().item() > 0.9  # the background class starts far ahead
    assert UNet(base=4, prior=0.2).config == UNet(base=4).config  # an initialisation choice, not architecture


@pytest.mark.parametrize("prior", [0.0, 0.6, -1, float("nan"), "0.1", True])
def test_bad_priors_are_refused(prior):
    with pytest.raises(ValueError, match=r"UNet prior must be a probability in \(0, 0.5\]"):
        UNet(prior=prior)
