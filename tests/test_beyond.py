"Cross-module checks of redo_nb.beyond: a supervised F learns, curves and per-source scores are counted right."
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
