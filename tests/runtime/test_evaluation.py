"""``runtime.evaluation``: the eval loop against a direct top-k by the torch module itself, label
files with several accepted classes, failures set aside, the split preprocessing, and rank merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnet.data.datasets import EvalSet, Failed, LabelResolver, load_eval_set
from effnet.data.images import load_image
from effnet.data.transforms import Preprocessing
from effnet.errors import EffnetError, UsageError
from effnet.runtime.evaluation import ShardOutput, collate, evaluate, predict_shard, score, split_preprocessing


def direct_top5(engine, paths) -> list[list[int]]:
    """The reference: the torch module itself, on the same decoded, preprocessed images."""
    batch = torch.from_numpy(np.stack([engine.preprocessing(load_image(p)) for p in paths]))
    with torch.inference_mode():
        logits = engine.model(batch)
    return torch.topk(logits, 5, dim=1).indices.tolist()


def test_evaluate_matches_a_direct_torch_topk(photo_tree, lite0_predictor):
    engine = lite0_predictor.engine
    eval_set = load_eval_set(photo_tree.root, LabelResolver(class_names=engine.labels))
    report = evaluate(engine, eval_set, batch_size=4, workers=0)
    top5 = direct_top5(engine, photo_tree.paths)
    assert [p["file"] for p in report.predictions] == [str(p.relative_to(photo_tree.root)) for p in photo_tree.paths]
    assert [p["target"] for p in report.predictions] == [[t] for t in photo_tree.targets]
    assert [p["top5"] for p in report.predictions] == top5
    top1 = np.mean([t == row[0] for t, row in zip(photo_tree.targets, top5)])
    top5_rate = np.mean([t in row for t, row in zip(photo_tree.targets, top5)])
    assert 0 < top1 < top5_rate < 1  # the set has hits and misses, so the check means something
    assert (report.top1, report.top5) == (pytest.approx(top1), pytest.approx(top5_rate))
    assert (report.images, report.evaluated, report.skipped, report.k) == (6, 6, 0, 5)
    assert [c.index for c in report.per_class] == sorted(photo_tree.targets)


def test_label_file_accepts_any_listed_class(tmp_path, photo_thumbnails, lite0_predictor):
    engine = lite0_predictor.engine
    for name in ("chelsea", "hopper", "coffee"):
        photo_thumbnails[name].save(tmp_path / f"{name}.jpg")
    (tmp_path / "val.txt").write_text("chelsea.jpg 281\nhopper.jpg 652\ncoffee.jpg n07920052\n")
    (tmp_path / "val-any.txt").write_text("chelsea.jpg 281,282,285\nhopper.jpg 652,400\ncoffee.jpg 967,968\n")
    top5 = direct_top5(engine, [tmp_path / f"{n}.jpg" for n in ("chelsea", "hopper", "coffee")])
    resolver = LabelResolver()
    results = {}
    for labels in ("val.txt", "val-any.txt"):
        eval_set = load_eval_set(tmp_path, resolver, labels=tmp_path / labels)
        output = predict_shard(engine, eval_set, range(len(eval_set)), batch_size=2)
        assert output.topk == top5
        results[labels] = score(eval_set, output, engine.labels)
        expected = np.mean([row[0] in accepted for row, accepted in zip(top5, eval_set.targets)])
        assert results[labels].top1 == pytest.approx(expected)
    # more accepted classes can only add hits; per-class accuracy is grouped by the first label
    assert results["val-any.txt"].top1 >= results["val.txt"].top1
    assert [c.index for c in results["val-any.txt"].per_class] == [281, 652, 967]


def test_accuracy_needs_labels(tmp_path, photo_thumbnails, lite0_predictor):
    photo_thumbnails["coffee"].save(tmp_path / "coffee.jpg")
    unlabelled = load_eval_set(tmp_path, LabelResolver(), allow_unlabelled=True)
    assert unlabelled.targets is None
    output = predict_shard(lite0_predictor.engine, unlabelled, [0])  # predictions alone need none
    assert output.positions == [0] and output.topk[0][0] == 967
    with pytest.raises(UsageError, match="accuracy needs labels"):
        evaluate(lite0_predictor.engine, unlabelled, workers=0)


def test_collate_sets_failures_aside():
    image = np.zeros((3, 4, 4), np.float32)
    images, positions, failed = collate([(image, 0), (Failed("b.jpg", "empty file (0 bytes)"), 1), (image + 1, 2)])
    assert isinstance(images, torch.Tensor) and images.shape == (2, 3, 4, 4) and images[1].eq(1).all()
    assert positions == [0, 2] and failed == [(1, "empty file (0 bytes)")]
    assert collate([(Failed("a", "x"), 7)]) == (None, [], [(7, "x")])
    raw = [np.zeros((5, 6, 3), np.uint8), np.zeros((7, 6, 3), np.uint8)]  # for graphs that preprocess
    assert isinstance(collate([(raw[0], 0), (raw[1], 1)])[0], list)


@pytest.mark.parametrize("mean, std", [((127 / 255,) * 3, (128 / 255,) * 3),
                                       ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_split_preprocessing_is_bit_identical_to_the_whole(mean, std):
    # the workers crop, the main process normalizes the batch in torch: same float32 arithmetic
    preprocessing = Preprocessing(size=32, crop_fraction=32 / 40, crop_mode="center_crop_then_resize", mean=mean,
                                  std=std)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((50, 70), (64, 40), (33, 33))]
    per_image, per_batch = split_preprocessing(preprocessing)
    batch = per_batch(collate([(per_image(image), i) for i, image in enumerate(images)])[0])
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert np.array_equal(batch, np.stack([preprocessing(image) for image in images]))


def test_merge_restores_data_order():
    parts = [ShardOutput([0, 2], [[1], [3]], [(4, "bad")], 1.0, 0.5), ShardOutput([1, 3], [[2], [4]], [], 2.0, 0.1)]
    merged = ShardOutput.merge(parts)
    assert (merged.positions, merged.topk, merged.failed) == ([0, 1, 2, 3], [[1], [2], [3], [4]], [(4, "bad")])
    assert (merged.seconds, merged.wait_seconds) == (2.0, 0.1)  # the slowest rank's timings


def test_nothing_readable_is_one_error(tmp_path):
    eval_set = EvalSet(tmp_path, "class folders", [tmp_path / "a.jpg"], [(5,)])
    with pytest.raises(EffnetError, match=r"no image could be evaluated \(1 unreadable\); first: .*a.jpg: junk"):
        score(eval_set, ShardOutput(failed=[(0, "junk")]), ["x"] * 10)
