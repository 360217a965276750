"""SAM's segmentation training: the loss, the mask targets and point prompts, and a run that learns."""

import json

import numpy as np
import pytest
import torch

from sca.cli import main
from sca.data.collate import RegionCollator
from sca.data.sam_frame import SamFrame
from sca.data.sources import load_records
from sca.data.transforms import PADDING_LABEL, LargeScaleJitter, RegionTransform
from sca.geometry import mask_iou
from sca.masks import decode_mask
from sca.train.error_points import error_points
from sca.train.losses import dice_loss, segmentation_loss, sigmoid_focal_loss


def test_focal_and_dice_losses_by_hand():
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    confident = torch.tensor([[20.0, -20.0], [20.0, -20.0]])
    assert sigmoid_focal_loss(confident, targets) == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(confident, targets) == pytest.approx(0.0, abs=1e-6)
    zero = torch.zeros(2, 2)
    # p = 0.5 everywhere: CE = ln 2, (1 - p_t)^2 = 1/4, alpha 0.25 on the 2 positives and 0.75 on the 2 negatives.
    assert sigmoid_focal_loss(zero, targets) == pytest.approx(np.log(2) / 4 * (0.25 + 0.75) / 2, rel=1e-5)
    # soft Dice: (2 * 1 + 1) / (2 + 2 + 1) -> loss 1 - 3/5
    assert dice_loss(zero, targets) == pytest.approx(0.4, rel=1e-5)
    assert mask_iou(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]) > 0, targets > 0.5) == pytest.approx(1 / 3)


def test_only_the_best_of_the_masks_learns_the_target_and_padding_is_left_out():
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, :2, :2] = 1
    good = target[0, 0] * 40 - 20
    bad = -good
    pred = torch.stack([bad, good, bad])[None, None].repeat(1, 2, 1, 1, 1).requires_grad_(True)
    iou_scores = torch.tensor([[[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]], requires_grad=True)
    valid = torch.tensor([[True, False]])
    loss = segmentation_loss(pred, iou_scores, target, valid)
    assert loss.mask.item() == pytest.approx(0.0, abs=1e-5)  # the good mask is the minimum
    assert loss.iou.item() == pytest.approx(0.0, abs=1e-6)  # actual IoUs 0, 1, 0 are what was predicted
    loss.total.backward()
    assert pred.grad[0, 1].abs().sum() == 0 and iou_scores.grad[0, 1].abs().sum() == 0  # padding: no gradient

    nothing = segmentation_loss(pred, iou_scores, target, torch.zeros(1, 2, dtype=torch.bool))
    assert nothing.total == 0 and nothing.total.requires_grad


@pytest.fixture(scope="module")
def shapes_records():
    return load_records({"source": "shapes", "split": "val", "num_images": 8, "image_size": 96})


@pytest.mark.parametrize("jitter", [False, True])
def test_mask_targets_and_points_sit_on_the_regions(shapes_records, jitter):
    frame = SamFrame(image_size=64, embedding_size=8)  # low-res frame 32 x 32
    transform = RegionTransform(frame, tokenizer=None, train=True, num_masks_per_sample=None, with_masks=True,
                                jitter=LargeScaleJitter(64, 0.8, 1.2) if jitter else None)
    checked = 0
    for index, record in enumerate(shapes_records):
        sample = transform(record, epoch_seed=index)
        if sample is None:
            continue
        labels, points, boxes = sample["mask_labels"], sample["input_points"], sample["input_boxes"]
        assert labels.shape == (len(boxes), frame.mask_size, frame.mask_size)
        scale = frame.mask_size / frame.image_size
        for label, point, box in zip(labels, points[:, 0], boxes):
            if not label.any():
                continue  # a jittered-away shape
            ys, xs = torch.nonzero(label, as_tuple=True)
            low_res_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            # Within two low-res pixels: the thin tips of a small star round away at low res.
            assert torch.allclose(low_res_box, box * scale, atol=2.0)
            # The point is on the shape (within two low-res pixels, for the same reason).
            x, y = (point * scale).long().tolist()
            assert label[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3].any()
            checked += 1
    assert checked >= 8


def test_collator_prompts_by_points_when_asked(shapes_records):
    frame = SamFrame(image_size=64, embedding_size=8)
    transform = RegionTransform(frame, tokenizer=None, train=True, with_masks=True)
    samples = [transform(r, epoch_seed=i) for i, r in enumerate(shapes_records[:3])]
    by_points = RegionCollator(point_prompt_probability=1.0)(samples)
    by_boxes = RegionCollator(point_prompt_probability=0.0)(samples)
    regions = max(len(s["input_boxes"]) for s in samples)
    most = max(s["input_points"].shape[1] for s in samples)
    assert "input_boxes" not in by_points and by_points["input_points"].shape == (3, regions, most, 2)
    assert by_points["input_labels"].shape == (3, regions, most)
    assert set(by_points["input_labels"].unique().tolist()) <= {-10, 0, 1} and (by_points["input_labels"][..., 0] == 1).all()
    assert "input_points" not in by_boxes and by_boxes["input_boxes"].shape == (3, regions, 4)
    assert by_boxes["mask_labels"].shape == (3, regions, frame.mask_size, frame.mask_size)
    assert by_boxes["mask_valid"].sum() == sum(len(s["input_boxes"]) for s in samples)


def test_sams_prompt_recipe_positives_inside_negatives_around_noisy_boxes(shapes_records):
    frame = SamFrame(image_size=96, embedding_size=24)
    transform = RegionTransform(frame, tokenizer=None, train=True, num_masks_per_sample=None, with_masks=True)
    seen = {"negatives": 0, "several positives": 0, "moved boxes": 0}
    for index, record in enumerate(shapes_records * 3):
        sample = transform(record, epoch_seed=index)
        masks = [decode_mask(r.mask, record.height, record.width) for r in record.regions]
        by_id = dict(zip([r.region_id for r in record.regions], masks))
        scale = frame.image_size / max(record.width, record.height)
        for region_id, points, labels, noisy, box in zip(sample["region_ids"], sample["input_points"], sample["input_labels"],
                                                         sample["noisy_boxes"], sample["input_boxes"]):
            mask = by_id[region_id]
            for (x, y), label in zip((points / scale).tolist(), labels.tolist()):
                if label == -10:
                    continue
                assert mask[int(y), int(x)] == bool(label)  # positives on the shape, negatives off it
            seen["negatives"] += int((labels == 0).any())
            seen["several positives"] += int((labels == 1).sum() > 1)
            moved = (noisy - box).abs()
            assert moved.max() <= 20 * scale + 1e-4
            seen["moved boxes"] += int(moved.max() > 0)
    assert all(count > 3 for count in seen.values()), seen


def test_background_negatives_fall_anywhere_off_the_shape(shapes_records):
    frame = SamFrame(image_size=96, embedding_size=24)
    distances = {}
    for share in (0.0, 1.0):
        transform = RegionTransform(frame, tokenizer=None, train=True, num_masks_per_sample=None, with_masks=True,
                                    background_negatives=share)
        distances[share] = []
        for index, record in enumerate(shapes_records * 3):
            sample = transform(record, epoch_seed=index)
            scale = frame.image_size / max(record.width, record.height)
            by_id = {r.region_id: r for r in record.regions}
            for region_id, points, labels in zip(sample["region_ids"], sample["input_points"], sample["input_labels"]):
                x1, y1, x2, y2 = by_id[region_id].box
                mask = decode_mask(by_id[region_id].mask, record.height, record.width)
                for (x, y), label in zip((points / scale).tolist(), labels.tolist()):
                    if label == 0:
                        assert not mask[int(y), int(x)]
                        # how far beyond the box, in box sides (around: at most a third)
                        beyond = max(x1 - x, x - x2, y1 - y, y - y2, 0) / max(x2 - x1, y2 - y1)
                        distances[share].append(beyond)
    assert distances[0.0] and max(distances[0.0]) <= 1 / 3 + 0.05
    assert distances[1.0] and max(distances[1.0]) > 0.5


def test_polygon_masks_decode():
    mask = decode_mask([[1, 1, 5, 1, 5, 5, 1, 5]], 8, 8)
    assert mask.shape == (8, 8) and mask[2:5, 2:5].all() and not mask[6:, 6:].any()


def test_error_points_fall_where_the_best_mask_is_wrong():
    target = torch.zeros(1, 3, 8, 8)
    target[0, :, 2:6, 2:6] = 1
    logits = torch.full((1, 3, 2, 8, 8), -5.0)
    logits[0, 0, 1, 2:6, 2:7] = 5.0  # region 0: its best mask spills over one column -> a negative point there
    logits[0, 1, 0, 2:6, 2:6] = 5.0  # region 1: the best mask misses one pixel -> a positive point on it
    logits[0, 1, 0, 3, 3] = -5.0
    logits[0, 1, 1, 2:6, 2:6] = 5.0  # (the right mask, but with the lower predicted IoU)
    scores = torch.tensor([[[0.1, 0.9], [0.9, 0.1], [0.5, 0.4]]])
    logits[0, 2, :, 2:6, 2:6] = 5.0  # region 2: right, but a padding region
    valid = torch.tensor([[True, True, False]])
    for _ in range(5):
        points, labels = error_points(logits, scores, target, valid, input_size=32)
        assert points.shape == (1, 3, 1, 2) and labels.shape == (1, 3, 1)
        x, y = points[0, 0, 0].tolist()
        assert labels[0, 0, 0] == 0 and x == (6 + 0.5) * 4 and 2 * 4 <= y < 6 * 4
        assert labels[0, 1, 0] == 1 and points[0, 1, 0].tolist() == [(3 + 0.5) * 4, (3 + 0.5) * 4]
        assert labels[0, 2, 0] == PADDING_LABEL


def test_sam_alone_learns_masks(tmp_path):
    """Segmentation-only fine-tuning (caption weight 0, decoder trainable) with one correction round (SAM's
    interactive recipe): the mask losses of both rounds fall."""
    out = tmp_path / "sam"
    code = main([
        "train", f"output_dir={out}", "train=shapes", "model.patch_size=8", "model.hidden_size=32",
        "data.train.0.num_images=64", "data.eval.num_images=8",
        "train.loss_weights.caption=0", "train.loss_weights.mask=1", "train.point_prompt_probability=0.5",
        "train.correction_rounds=1",
        "train.trainable_modules=[vision_encoder,prompt_encoder,mask_decoder]",
        "train.args.max_steps=60", "train.args.logging_steps=10", "train.args.eval_steps=1000",
        "train.args.save_steps=1000", "train.args.warmup_steps=5", "train.args.learning_rate=3e-3",
    ])
    assert code == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    mask_losses = [h["mask_loss"] for h in history if "mask_loss" in h]
    assert "caption_loss" not in {k for h in history for k in h}
    assert len(mask_losses) >= 5 and mask_losses[-1] < 0.6 * mask_losses[0]
    corrected = [h["correction_mask_loss"] for h in history if "correction_mask_loss" in h]
    assert len(corrected) == len(mask_losses) and corrected[-1] < 0.6 * corrected[0]
