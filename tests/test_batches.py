import pytest
import torch

from supernet.batches import AugmentedDataset, StepBatchSampler


def test_batches_are_a_function_of_seed_and_step():
    a = StepBatchSampler(50, 4, seed=1, start=0, stop=30)
    b = StepBatchSampler(50, 4, seed=1, start=17, stop=30)  # a resumed run
    assert list(a)[17:] == list(b)
    assert a.steps_per_epoch == 12
    first_epoch = [i for step in range(12) for i, *_ in a.batch(step)]
    assert len(set(first_epoch)) == 48  # a permutation, last incomplete batch dropped
    assert [i for i, *_ in a.batch(12)] != [i for i, *_ in a.batch(0)]  # a new epoch reshuffles
    assert list(StepBatchSampler(50, 4, seed=2, start=0, stop=3)) != list(a)[:3]
    flips = [f for step in range(12) for _, f, _ in a.batch(step)]
    assert 10 < sum(flips) < 38


def test_ranks_share_one_global_batch():
    ranks = [StepBatchSampler(40, 3, seed=0, start=0, stop=5, rank=r, world=2) for r in range(2)]
    for step in range(5):
        r0, r1 = (s.batch(step) for s in ranks)
        assert len(r0) == len(r1) == 3 and not {i for i, *_ in r0} & {i for i, *_ in r1}
    single = StepBatchSampler(40, 6, seed=0, start=0, stop=5)
    assert [i for i, *_ in single.batch(2)] == [i for s in ranks for i, *_ in s.batch(2)]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(5, 3, seed=0, start=0, stop=1, world=2)


def test_flip_mirrors_image_and_boxes():
    image = torch.randint(0, 255, (3, 4, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    target = {"boxes": torch.tensor([[1.0, 0.0, 4.0, 2.0]]), "labels": torch.tensor([0])}
    ds = AugmentedDataset([(image, target)])
    same, _ = ds[(0, False, 7)]
    flipped, t = ds[(0, True, 7)]
    assert torch.equal(same, image) and torch.equal(flipped, image.flip(-1))
    assert t["boxes"].tolist() == [[6.0, 0.0, 9.0, 2.0]]
    assert target["boxes"].tolist() == [[1.0, 0.0, 4.0, 2.0]]  # the source is not modified


def test_scale_crop_is_a_function_of_the_key_and_keeps_boxes_inside():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8, generator=g)
    target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 20.0], [40.0, 10.0, 60.0, 44.0]]), "labels": torch.tensor([0, 2]), "image_id": 5}
    ds = AugmentedDataset([(image, target)], "scale_crop")
    a, ta = ds[(0, False, 11)]
    b, tb = ds[(0, False, 11)]
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])  # the seed alone decides
    outs = [ds[(0, flip, seed)] for seed in range(12) for flip in (False, True)]
    assert len({tuple(img.shape) for img, _ in outs}) > 3  # zoomed out and cropped to many sizes
    for img, t in outs:
        h, w = img.shape[-2:]
        boxes = t["boxes"]
        assert type(img) is torch.Tensor and img.dtype == torch.uint8 and len(boxes) == len(t["labels"]) and t["image_id"] == 5
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    ds[(0, False, 4)]
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone
    with pytest.raises(ValueError, match="`augment`: expected one of"):
        AugmentedDataset([], "mosaic")
