import math

import pytest
import torch
import torch.nn.functional as F

from unetlab.losses import BCEDiceLoss, dice_loss

LN3 = math.log(3.0)  # sigmoid(ln 3) = 3 / 4, sigmoid(-ln 3) = 1 / 4


def _two_images():
    """Image 0: p = [3/4, 1/4] against g = [1, 0]. Image 1: p = [1/2, 1/2] against an empty truth."""
    logits = torch.tensor([[LN3, -LN3], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    return logits, target


def test_dice_loss_by_hand():
    logits, target = _two_images()
    # Image 0: sum(p*g) = 3/4, sum(p) = 1, sum(g) = 1 -> 1 - (2 * 3/4 + 1) / (1 + 1 + 1) = 1 - 2.5 / 3 = 1/6.
    # Image 1: sum(p*g) = 0, sum(p) = 1, sum(g) = 0   -> 1 - (0 + 1) / (1 + 0 + 1) = 1/2.
    # Mean over the batch: (1/6 + 1/2) / 2 = 1/3.
    assert dice_loss(logits, target).item() == pytest.approx(1 / 3, abs=1e-6)
    assert dice_loss(logits[:1], target[:1]).item() == pytest.approx(1 / 6, abs=1e-6)


def test_dice_loss_eps():
    logits, target = _two_images()
    # eps = 0.5, image 0: 1 - (1.5 + 0.5) / (2 + 0.5) = 0.2; image 1: 1 - 0.5 / (1 + 0.5) = 2/3.
    assert dice_loss(logits, target, eps=0.5).item() == pytest.approx((0.2 + 2 / 3) / 2, abs=1e-6)


def test_empty_truth_costs_the_predicted_mass():
    target = torch.zeros(1, 1, 4, 4)
    for logit in (-3.0, 0.0, 3.0):
        logits = torch.full((1, 1, 4, 4), logit)
        p_sum = 16 * torch.sigmoid(torch.tensor(logit)).item()
        assert dice_loss(logits, target).item() == pytest.approx(p_sum / (p_sum + 1.0), abs=1e-6)
    # Predicting nothing on an empty image is (nearly) free; predicting everything costs (nearly) the maximum.
    assert dice_loss(torch.full((1, 1, 4, 4), -20.0), target).item() < 1e-6
    assert dice_loss(torch.full((1, 1, 4, 4), 20.0), target).item() > 0.9


def test_empty_image_is_not_drowned_by_the_rest_of_the_batch():
    """The loss is the mean of per-image losses, so a clean image's false positives keep their weight."""
    clean = torch.full((1, 1, 8, 8), -20.0)
    clean[..., 0, :4] = 20.0  # 4 false-positive pixels on a defect-free image
    perfect = torch.full((1, 1, 8, 8), -20.0)
    perfect[..., :4, :] = 20.0  # a 32-pixel defect found exactly
    logits = torch.cat([clean, perfect])
    target = torch.cat([torch.zeros(1, 1, 8, 8), (perfect > 0).float()])
    # Per image: clean 4 / (4 + 1) = 0.8, perfect 0 -> mean 0.4.
    # (A batch-level Dice would give 1 - (2 * 32 + 1) / (36 + 32 + 1) = 0.058: the false positives nearly vanish.)
    assert dice_loss(logits, target).item() == pytest.approx(0.4, abs=1e-6)


def test_perfect_prediction_is_near_zero():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 3:7] = 1
    logits = (target * 2 - 1) * 20
    assert dice_loss(logits, target).item() < 1e-6
    assert BCEDiceLoss()(logits, target).item() < 1e-6


def test_bce_dice_by_hand():
    logits, target = _two_images()
    # BCE per pixel: -ln(3/4) twice (image 0, both pixels right with p = 3/4), ln 2 twice (image 1, p = 1/2, g = 0).
    # Mean over the 4 pixels: (2 ln(4/3) + 2 ln 2) / 4 = ln(8/3) / 2.
    bce = math.log(8 / 3) / 2
    assert BCEDiceLoss()(logits, target).item() == pytest.approx(bce + 1 / 3, abs=1e-6)
    assert BCEDiceLoss(bce_weight=2.0, dice_weight=0.5)(logits, target).item() == pytest.approx(
        2 * bce + 0.5 / 3, abs=1e-6
    )
    assert BCEDiceLoss(dice_weight=0.0)(logits, target).item() == pytest.approx(bce, abs=1e-6)


def test_bce_dice_equals_its_two_terms_on_random_input():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 16, 16, generator=g) * 3
    target = (torch.rand(3, 1, 16, 16, generator=g) > 0.8).float()
    expected = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
    torch.testing.assert_close(BCEDiceLoss()(logits, target), expected)


def test_gradients_flow_to_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 8, 8, generator=g).requires_grad_(True)
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
    for loss_fn in (dice_loss, BCEDiceLoss()):
        logits.grad = None
        loss_fn(logits, target).backward()
        assert torch.isfinite(logits.grad).all()
        assert (logits.grad != 0).all()


def test_low_precision_logits_are_summed_in_float32():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 64, 64, generator=g)
    target = (torch.rand(2, 1, 64, 64, generator=g) > 0.9).float()
    loss = BCEDiceLoss()(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    reference = BCEDiceLoss()(logits.bfloat16().float(), target)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)


def test_bool_target_is_accepted():
    logits, target = _two_images()
    assert dice_loss(logits, target.bool()).item() == pytest.approx(1 / 3, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [dice_loss, BCEDiceLoss()])
def test_shape_mismatch(loss_fn):
    expected = r"same shape \(B, 1, H, W\); got logits \(2, 1, 8, 8\) and target \(2, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        loss_fn(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))


def test_non_tensor_target():
    with pytest.raises(TypeError, match="dice_loss expects target as a torch.Tensor; got list"):
        dice_loss(torch.zeros(1, 1, 2, 2), [[0, 1], [1, 0]])


def test_bad_eps():
    with pytest.raises(ValueError, match="dice_loss expects eps > 0.*got 0"):
        dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), eps=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bce_weight=-1.0), "bce_weight must be a finite number >= 0; got -1.0"),
        (dict(dice_weight=float("nan")), "dice_weight must be a finite number >= 0; got nan"),
        (dict(bce_weight="1"), "bce_weight must be a finite number >= 0; got '1'"),
        (dict(bce_weight=0, dice_weight=0.0), "needs bce_weight > 0 or dice_weight > 0"),
    ],
)
def test_bad_weights(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BCEDiceLoss(**kwargs)


# ------------------------------------------------------------------------------------------------------------
# Multi-class: softmax cross-entropy + Dice over the defect classes

from unetlab.losses import CEDiceLoss, multiclass_dice_loss  # noqa: E402

LN2 = math.log(2.0)


def _three_class_pixels():
    """One image, 2 pixels, 3 classes. Logits [ln2, 0, 0] -> p = [1/2, 1/4, 1/4]; [0, 0, ln2] -> [1/4, 1/4, 1/2].

    Labels: pixel 0 is class 1, pixel 1 is class 2.
    """
    logits = torch.tensor([[LN2, 0.0], [0.0, 0.0], [0.0, LN2]]).reshape(1, 3, 1, 2)
    labels = torch.tensor([[[1, 2]]])
    return logits, labels


def test_multiclass_dice_by_hand():
    logits, labels = _three_class_pixels()
    # class 1: sum(p g) = 1/4, sum(p) = 1/2, sum(g) = 1 -> 1 - (1/2 + 1) / (3/2 + 1) = 1 - 3/5 = 2/5
    # class 2: sum(p g) = 1/2, sum(p) = 3/4, sum(g) = 1 -> 1 - (1 + 1) / (7/4 + 1) = 1 - 8/11 = 3/11
    # class 0 (background, only with include_background): sum(p g) = 0, sum(p) = 3/4, sum(g) = 0
    #   -> 1 - 1 / (3/4 + 1) = 3/7
    assert multiclass_dice_loss(logits, labels).item() == pytest.approx((2 / 5 + 3 / 11) / 2, abs=1e-6)
    assert multiclass_dice_loss(logits, labels, include_background=True).item() == pytest.approx(
        (3 / 7 + 2 / 5 + 3 / 11) / 3, abs=1e-6)


def test_ce_dice_by_hand():
    logits, labels = _three_class_pixels()
    # cross-entropy: pixel 0 -log(1/4), pixel 1 -log(1/2); mean = (ln 4 + ln 2) / 2 = 1.5 ln 2
    ce = 1.5 * LN2
    dice = (2 / 5 + 3 / 11) / 2
    assert CEDiceLoss()(logits, labels).item() == pytest.approx(ce + dice, abs=1e-6)
    assert CEDiceLoss(ce_weight=2.0, dice_weight=0.5)(logits, labels).item() == pytest.approx(
        2 * ce + 0.5 * dice, abs=1e-6)
    assert F.cross_entropy(logits, labels).item() == pytest.approx(ce, abs=1e-6)


def test_perfect_multiclass_prediction_costs_almost_nothing():
    labels = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    logits = 30.0 * F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert CEDiceLoss()(logits, labels).item() < 1e-3
    assert CEDiceLoss()(-logits, labels).item() > 1.0


def test_multiclass_loss_has_gradients_for_every_class():
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    labels = torch.tensor([[0, 1, 2, 3]]).repeat(4, 1)[None]
    CEDiceLoss()(logits, labels).backward()
    assert all(logits.grad[0, c].abs().sum() > 0 for c in range(4))


@pytest.mark.parametrize("logits, labels, match", [
    (torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), "C >= 2"),
    (torch.zeros(1, 4, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long), "no channel axis"),
    (torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4), "integer class ids"),
    (torch.zeros(1, 4, 4, 4), torch.full((1, 4, 4), 4), r"labels in \[0, 4\)"),
    (torch.zeros(1, 4, 4, 4), torch.full((1, 4, 4), -1), r"labels in \[0, 4\)"),
])
def test_multiclass_loss_bad_input(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        CEDiceLoss()(logits, labels)


def test_ce_dice_weights_are_validated():
    with pytest.raises(ValueError, match="both 0"):
        CEDiceLoss(0, 0)
    with pytest.raises(ValueError, match="ce_weight"):
        CEDiceLoss(ce_weight=-1)
