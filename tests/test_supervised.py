"Cross-module checks of redo_nb.supervised (and the trainer on mixtures and n = 3): a supervised F learns, curves and per-source scores are counted right."
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from redo_nb.supervised import matching_k, supervised_curve, train_supervised
from redo_nb.builtin import make_synthetic
from redo_nb.data import SegmentationData
from redo_nb.generative import IGNORE
from redo_nb.metrics import best_centred_disc, evaluate, evaluate_by_source

SIZE = 32
pytestmark = pytest.mark.usefixtures('one_thread')


def _image_protocol_by_hand(pred, gt, n):
    """The paper's per-image scores written out: for each image, every one-to-one naming of the n regions by the n
    labels; foreground IoU (mean over labels 1..n-1) and mean IoU (labels 0..n-1) each at their best naming, then
    averaged over the images. `pred`, `gt`: label maps (B, H, W) without ignored pixels."""
    iou, miou = [], []
    for p, y in zip(pred.numpy(), gt.numpy()):
        best_fg = best_all = 0.
        for perm in itertools.permutations(range(n)):
            named = np.array(perm)[p]
            ious = []
            for label in range(n):
                union = ((named == label) | (y == label)).sum()
                ious.append(((named == label) & (y == label)).sum() / union if union else 1.)
            best_fg, best_all = max(best_fg, np.mean(ious[1:])), max(best_all, np.mean(ious))
        iou.append(best_fg); miou.append(best_all)
    return float(np.mean(iou)), float(np.mean(miou))


def test_supervised_f_with_50_labelled_images_beats_the_centred_disc():
    train, test = make_synthetic(50, SIZE, seed=1), make_synthetic(64, SIZE, seed=2)
    F = train_supervised(train.images, train.masks, iters=50, batch_size=8, ch=8, seed=0)
    s = evaluate(F, test.images, test.masks.long())
    model, disc = s['model']['image'], s['centred_disc']['image']
    assert model['iou'] > disc['iou'] + 0.2, (model, disc)
    assert model['acc'] > 0.85, model


def test_train_supervised_is_reproducible_from_its_seed():
    d = make_synthetic(4, 16, seed=0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    fit = lambda seed: train_supervised(d.images, d.masks, iters=3, batch_size=2, ch=4, seed=seed)(x)
    torch.testing.assert_close(fit(0), fit(0))
    assert not torch.allclose(fit(0), fit(1))


def test_supervised_curve_splits_nested_subsets_and_skips_large_k():
    data = make_synthetic(20, 16, seed=0)
    with pytest.warns(UserWarning, match=r'skipping k=\[50\]'):
        rows = supervised_curve(data, ks=(4, 1, 50), test_size=8, iters=2, batch_size=2, ch=4, verbose=False)
    assert [r['k'] for r in rows] == [1, 4] and all(r['n_test'] == 8 for r in rows)
    # the split, repeated: 8 held-out test images, the training pool after them (its first k for each k)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    test, pool = data.subset(perm[:8]), data.subset(perm[8:])
    disc = best_centred_disc(test.masks.long())[1]['iou']
    assert all(r['disc_iou'] == pytest.approx(disc, abs=1e-12) for r in rows)  # the same held-out images for every k
    for r in rows:
        F = train_supervised(pool.images[:r['k']], pool.masks[:r['k']], iters=2, batch_size=2, ch=4, seed=0)
        with torch.no_grad(): pred = F(test.images.float() / 127.5 - 1).argmax(1)
        iou, miou = _image_protocol_by_hand(pred, test.masks.long(), 2)
        assert (r['iou'], r['miou']) == (pytest.approx(iou, abs=1e-9), pytest.approx(miou, abs=1e-9)), r
    assert matching_k(rows, -1.0) == 1
    assert matching_k(rows, max(r['iou'] for r in rows) + 1e-6) is None
    assert matching_k(rows, rows[1]['iou']) == (4 if rows[0]['iou'] < rows[1]['iou'] else 1)
    with pytest.raises(ValueError, match='test_size'):
        supervised_curve(data, ks=(1,), test_size=20, iters=1)


def test_evaluate_by_source_one_entry_per_source_with_counts():
    a, b = make_synthetic(5, 16, seed=1), make_synthetic(3, 16, seed=2)
    b.masks[0] = IGNORE  # an unlabelled image is not scored
    mixed = SegmentationData.concat([a, b], names=['first', 'second'])
    half = lambda x: torch.full((len(x), 2, 16, 16), 0.5)
    res = evaluate_by_source(half, mixed)
    assert list(res) == ['first', 'second']
    assert res['first']['model']['image']['n_images'] == 5
    assert res['second']['model']['image']['n_images'] == 2
    # per-source scores are those of the source alone
    alone = evaluate(half, b.images[1:], b.masks[1:].long())
    assert res['second']['model']['image'] == alone['model']['image']


def test_evaluate_by_source_leaves_out_unlabelled_sources():
    a = make_synthetic(3, 16, seed=1)
    unlabelled = SegmentationData(make_synthetic(2, 16, seed=3).images, None, 'photos')
    mixed = SegmentationData.concat([a, unlabelled], names=['shapes', 'photos'])
    with pytest.warns(UserWarning, match="'photos' has no labelled image"):
        res = evaluate_by_source(lambda x: torch.full((len(x), 2, 16, 16), 0.5), mixed)
    assert list(res) == ['shapes']


def test_trainer_with_three_regions_end_to_end(tiny_config):
    from redo_nb.inference import load_model, segment
    from redo_nb.train import Trainer
    train, val = make_synthetic(24, SIZE, n_objects=2, seed=1), make_synthetic(8, SIZE, n_objects=2, seed=2)
    trainer = Trainer(tiny_config(n=3, dataset='synthetic2', iters=6, eval_every=3, ckpt_every=3),
                      data=train, val_data=val)
    summary = trainer.fit()
    assert summary['iterations'] == 6
    model = load_model(Path(summary['run_dir']) / 'last.pt')
    assert len(model.G.generators) == 3
    M = segment(model, val.images, amp=trainer.cfg.amp)  # the precision the run evaluated in
    assert M.shape == (8, 3, SIZE, SIZE)
    torch.testing.assert_close(M.sum(1), torch.ones(8, SIZE, SIZE))
    # the final scores are those of last.pt's masks, the 3 regions matched to the 3 labels in each image (the
    # paper's protocol), IoU averaged over the two objects: recomputed here by trying every naming
    final = summary['final']['model']['image']
    iou, miou = _image_protocol_by_hand(M.argmax(1), val.masks.long(), 3)
    assert final['n_images'] == 8
    assert final['iou'] == pytest.approx(iou, abs=1e-9) and final['miou'] == pytest.approx(miou, abs=1e-9)


def test_trainer_on_a_mixture_scores_each_source(tiny_config):
    from redo_nb.train import Trainer
    mix = lambda n, seed: SegmentationData.concat([make_synthetic(n, SIZE, seed=seed), make_synthetic(n, SIZE, seed=seed + 1)],
                                                  names=['a', 'b'])
    val = mix(5, 10)
    val.masks[7] = IGNORE  # an unlabelled image of source b is not scored
    trainer = Trainer(tiny_config(iters=6, eval_every=3, ckpt_every=3, n_val=None), data=mix(12, 0), val_data=val)
    trainer.fit()
    evals = [r for r in trainer.history if 'eval' in r]
    assert len(evals) == 2 and all(list(r['by_source']) == ['a', 'b'] for r in evals)
    last = evals[-1]['by_source']
    assert [last[s]['model']['image']['n_images'] for s in ('a', 'b')] == [5, 4]
    # each source's scores are those of its images alone
    alone = trainer.evaluate_model(val.source_subset('a'))
    assert last['a']['model']['image'] == alone['model']['image']
