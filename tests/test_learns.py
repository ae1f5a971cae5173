"""Does training learn? A CPU-sized run of the `cpu` preset on the built-in data (about a minute).

What is asserted is what ReDO's redraw constraint predicts after a short run: the masks depend on the
image. The model's per-image IoU must beat its *own average mask* (its mean mask over the validation set,
used for every image): a position prior alone cannot do that. It must also beat the all-foreground
baseline, and the losses must have moved. Reaching high IoU takes far longer; see benchmarks/RESULTS.md.
"""
import json

import pytest
import torch

from redo_nb.train import get_config, train


@pytest.fixture(scope='module')
def short_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp('runs')
    cfg = get_config('cpu', iters=150, eval_every=50, ckpt_every=150, log_every=10, n_val=200,
                     max_minutes=None, out_dir=str(out), name='learns', progress=False, num_threads=1)
    return train(cfg)


def _evals(summary):
    lines = (json.loads(l) for l in open(f"{summary['run_dir']}/metrics.jsonl"))
    return [r for r in lines if 'eval' in r]


def test_masks_follow_the_image_not_a_position_prior(short_run):
    evals = _evals(short_run)
    assert len(evals) >= 3
    gains = [r['eval']['model']['image']['iou'] - r['eval']['average_mask']['image']['iou'] for r in evals]
    best = max(evals, key=lambda r: r['eval']['model']['image']['iou'])['eval']
    assert max(gains) > 0.05, f'IoU never beat the model\'s own average mask: gains {gains}'
    assert best['model']['image']['iou'] > best['all_foreground']['image']['iou'] + 0.05


def test_losses_moved(short_run):
    rows = [json.loads(l) for l in open(f"{short_run['run_dir']}/metrics.jsonl")]
    logs = [r for r in rows if 'eval' not in r and 'loss_d' in r]
    assert len(logs) >= 5
    first, last = logs[0], logs[-1]
    assert abs(first['loss_d'] - last['loss_d']) > 0.05 or abs(first['loss_g'] - last['loss_g']) > 0.05
