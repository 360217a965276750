import random

import numpy as np
import pytest
import torch
from torch import nn

from sca.data.collate import RegionCollator
from sca.data.records import Region
from sca.data.sam_frame import SamFrame
from sca.data.sources.shapes import ShapesWorld
from sca.data.transforms import LargeScaleJitter, RegionTransform
from sca.geometry import mask_box
from sca.masks import decode_rle
from sca.train.optim import param_groups


@pytest.fixture(scope="module")
def frame():
    return SamFrame(image_size=128, embedding_size=8)


def test_inference_keeps_every_region_in_order(frame, bpe_tokenizer):
    record = ShapesWorld(seed=3, image_size=96, max_shapes=3).record(0)
    record.regions.append(Region(99, (5.0, 5.0, 5.0, 9.0), ["a zero-width box"]))
    sample = RegionTransform(frame, bpe_tokenizer, train=False)(record)
    assert sample["region_ids"] == [r.region_id for r in record.regions]
    scale = 128 / 96
    torch.testing.assert_close(sample["input_boxes"], torch.tensor([r.box for r in record.regions]).float() * scale)


def test_training_samples_at_most_n_regions_and_drops_empty_boxes(frame, bpe_tokenizer):
    regions = [Region(i, (i, i, i + 10.0, i + 10.0), [f"c{i}", f"d{i}"]) for i in range(6)]
    regions.append(Region(6, (3.0, 3.0, 3.0, 30.0), ["empty"]))
    record = ShapesWorld(image_size=64).record(0)
    record.regions = regions
    transform = RegionTransform(frame, bpe_tokenizer, train=True, num_masks_per_sample=4)
    sample = transform(record, epoch_seed=1)
    assert len(sample["region_ids"]) == 4 and 6 not in sample["region_ids"]
    assert sample["input_boxes"].shape == (4, 4) and len(sample["caption_ids"]) == 4


def test_jitter_moves_boxes_and_masks_with_the_image():
    record = ShapesWorld(seed=1, image_size=96, max_shapes=3).record(2)
    masks = [decode_rle(r.mask) for r in record.regions]
    boxes = np.array([r.box for r in record.regions])
    jitter = LargeScaleJitter(output_size=128, min_scale=0.5, max_scale=1.5)
    checked = 0
    for seed in range(8):
        image, new_boxes, new_masks = jitter(record.image, boxes, masks, random.Random(seed))
        assert image.size == (128, 128)
        for box, mask in zip(new_boxes, new_masks):
            if box.min() < 0 or box.max() > 128:
                continue  # a shape cut by the crop has a smaller visible extent than its clipped box
            assert np.abs(np.array(mask_box(mask)) - box).max() <= 2.0  # nearest-neighbour rounding
            checked += 1
    assert checked >= 5


def test_collator_pads_regions_instead_of_dropping_them(frame, bpe_tokenizer):
    world = ShapesWorld(seed=5, image_size=64, min_shapes=1, max_shapes=3)
    transform = RegionTransform(frame, bpe_tokenizer, train=False)
    samples = [transform(world.record(i)) for i in range(8)]
    counts = [len(s["region_ids"]) for s in samples]
    assert len(set(counts)) > 1
    batch = RegionCollator(bpe_tokenizer.pad_token_id, with_metadata=True)(samples)
    assert batch["input_boxes"].shape[:2] == (8, max(counts))
    assert batch["region_mask"].sum(1).tolist() == counts
    for b, count in enumerate(counts):
        assert (batch["labels"][b, count:] == -100).all()
        assert (batch["labels"][b, :count] != -100).any(dim=1).all()
        assert batch["metadata"][b]["region_ids"] == samples[b]["region_ids"]


def test_param_groups_custom_lrs_and_decay():
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 1))
    model[2].requires_grad_(False)
    decay = {"0.weight"}
    groups = param_groups(model, 1e-3, 0.1, decay, {"1": 5e-4})
    assigned = [id(p) for g in groups for p in g["params"]]
    assert sorted(assigned) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model[0].weight)]["weight_decay"] == 0.1 and by_param[id(model[0].weight)]["lr"] == 1e-3
    assert by_param[id(model[0].bias)]["weight_decay"] == 0.0
    assert by_param[id(model[1].weight)]["lr"] == 5e-4
    with pytest.raises(ValueError, match="not a module"):
        param_groups(model, 1e-3, 0.1, decay, {"nope": 1.0})


def test_mixed_dataset_draws_by_probability_and_repeatably():
    from sca.data.dataset import MixedDataset

    class Constant(torch.utils.data.Dataset):
        def __init__(self, value, size):
            self.value, self.size = value, size

        def __len__(self):
            return self.size

        def __getitem__(self, index):
            return self.value

    mixed = MixedDataset([Constant("a", 10), Constant("b", 30)], probabilities=[3, 1], length=4000, seed=7)
    draws = [mixed[i] for i in range(len(mixed))]
    assert abs(draws.count("a") / len(draws) - 0.75) < 0.03
    assert draws == [MixedDataset([Constant("a", 10), Constant("b", 30)], [3, 1], 4000, seed=7)[i] for i in range(4000)]
    with pytest.raises(ValueError, match="one probability per"):
        MixedDataset([Constant("a", 1)], [0.5, 0.5])
