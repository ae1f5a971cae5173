"Cross-module checks of redo_nb.beyond: a supervised F learns, curves and per-source scores are counted right."
from pathlib import Path

import pytest
import torch

from redo_nb.beyond import evaluate_by_source, matching_k, supervised_curve, train_supervised
from redo_nb.data import SegmentationData, make_synthetic
from redo_nb.generative import IGNORE
from redo_nb.metrics import evaluate

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    assert [r['k'] for r in rows] == [1, 4]
    assert all(r['n_test'] == 8 and 0 <= r['iou'] <= 1 and 0 <= r['disc_iou'] <= 1 for r in rows)
    assert matching_k(rows, -1.0) == 1
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


def _tiny_config(tmp_path, **kw):
    from redo_nb.train import get_config
    return get_config('cpu', img_size=SIZE, batch_size=4, ch_f=8, ch_g=8, ch_d=8, size_z=8, progress=False,
                      num_threads=1, iters=6, eval_every=3, ckpt_every=3, collapse_check_until=0,
                      out_dir=str(tmp_path), max_minutes=None, **kw)


def test_trainer_with_three_regions_end_to_end(tmp_path):
    from redo_nb.train import Trainer, load_model
    train, val = make_synthetic(24, SIZE, n_objects=2, seed=1), make_synthetic(8, SIZE, n_objects=2, seed=2)
    trainer = Trainer(_tiny_config(tmp_path, n=3, dataset='synthetic2'), data=train, val_data=val)
    summary = trainer.fit()
    assert summary['iterations'] == 6
    # scores take the best matching of the 3 regions to the 3 labels; IoU is the mean over the two objects
    final = summary['final']['model']['image']
    assert final['n_images'] == 8 and 0 <= final['iou'] <= 1 and 0 <= final['miou'] <= 1
    model = load_model(Path(summary['run_dir']) / 'last.pt')
    M = model.masks(val.images[:2].float() / 127.5 - 1)
    assert M.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(M.sum(1), torch.ones(2, SIZE, SIZE))
    assert len(model.G.generators) == 3


def test_trainer_on_a_mixture_scores_each_source(tmp_path):
    from redo_nb.train import Trainer
    mix = lambda n, seed: SegmentationData.concat([make_synthetic(n, SIZE, seed=seed), make_synthetic(n, SIZE, seed=seed + 1)],
                                                  names=['a', 'b'])
    val = mix(5, 10)
    val.masks[7] = IGNORE  # an unlabelled image of source b is not scored
    trainer = Trainer(_tiny_config(tmp_path), data=mix(12, 0), val_data=val)
    trainer.fit()
    evals = [r for r in trainer.history if 'eval' in r]
    assert len(evals) == 2 and all(list(r['by_source']) == ['a', 'b'] for r in evals)
    last = evals[-1]['by_source']
    assert [last[s]['model']['image']['n_images'] for s in ('a', 'b')] == [5, 4]
    # each source's scores are those of its images alone
    alone = trainer.evaluate_model(val.source_subset('a'))
    assert last['a']['model']['image'] == alone['model']['image']
