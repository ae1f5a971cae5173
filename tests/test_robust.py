"""Small collections without labels (redo_nb.robust): an unlabelled folder trains and hands over best.pt, the health
score flags a run made to degenerate, and the run stops or rolls back as documented."""
from pathlib import Path

import pytest
import torch

from redo_nb.engine import load_checkpoint
from redo_nb.inference import load_model
from redo_nb.robust import label_free_choice, mask_health, rollback
from redo_nb.testing import fake_photo_folder
from redo_nb.train import Trainer
from redo_nb.viz import load_metrics

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
pytestmark = pytest.mark.usefixtures('one_thread', 'private_cache')


def test_unlabelled_folder_trains_and_hands_over_best_pt(tmp_path, tiny_config):
    "A plain folder of photos, no masks: the paper's select='labels' falls back to health, and best.pt is written."
    photos = fake_photo_folder(tmp_path / 'photos', n=12, size=40, masks=False, subfolder=False)
    t = Trainer(tiny_config(dataset='folder', root=str(photos), iters=9, eval_every=3, name='plain', data_kwargs={}))
    s = t.fit()
    evals = [r['iter'] for r in t.history if 'health' in r]
    assert s['final'] == {} and s['best']['by'] == 'health' and s['best_by'].get('labels') is None
    # what the trainer kept is what the documented rule, replayed on the log, picks
    assert evals == [3, 6, 9] and s['best']['iter'] == label_free_choice(load_metrics(t.history))['iter']
    best = Path(s['run_dir']) / 'best.pt'
    assert load_checkpoint(best)['iteration'] == s['best']['iter']
    M = load_model(best).masks(torch.zeros(2, 3, 32, 32))
    torch.testing.assert_close(M.sum(1), torch.ones(2, 32, 32))


def test_networks_train_at_net_size_and_hand_over_masks_at_img_size(tmp_path, tiny_config):
    "net_size (the cpu preset's 32 px on 64-px photos): the networks train on smaller images, scores and masks are at img_size."
    photos = fake_photo_folder(tmp_path / 'photos', n=12, size=40, masks=True, subfolder=False)
    t = Trainer(tiny_config(dataset='folder', root=str(photos), img_size=32, net_size=16, iters=6, eval_every=3,
                            val_split='train', name='net16', data_kwargs={}))
    assert t.images.shape[-2:] == (16, 16) and t.model.F.img_size == t.model.G.generators[0].img_size == 16
    assert t.val_data.images.shape[-2:] == (32, 32)
    s = t.fit()  # every evaluation scored F's masks against the 32-px labels (evaluate checks their shape)
    assert [r['iter'] for r in t.history if 'eval' in r] == [3, 6] and s['final']['model']['image']['iou'] > 0
    model = load_model(Path(s['run_dir']) / 'best.pt')
    assert model.F.img_size == 16 and model.config.img_size == 32
    assert model.masks(t.val_data.batch(torch.arange(2))[0]).shape == (2, 2, 32, 32)


def _fake_health(monkeypatch, scores):
    "Make the trainer's health score and agreement at its successive evaluations be `scores` [(score, agreement), ...]."
    import redo_nb.train
    scores, real = iter(scores), redo_nb.train.health
    def fake_health(trainer):
        h, (score, agreement) = real(trainer), next(scores)
        return {**h, 'score': score, 'agreement': agreement}
    monkeypatch.setattr(redo_nb.train, 'health', fake_health)


def _folder_trainer(tmp_path, tiny_config, **kw):
    "A Trainer on a plain folder of 12 photos without masks, 9 iterations, an evaluation every 3."
    photos = fake_photo_folder(tmp_path / 'photos', n=12, size=40, masks=False, subfolder=False)
    return Trainer(tiny_config(dataset='folder', root=str(photos), iters=9, eval_every=3, data_kwargs={}, **kw))


def test_centre_prior_evaluations_give_way_to_fs_own(tmp_path, tiny_config, monkeypatch):
    """With the centre prior on, the health score while the prior shapes the masks sets no peak to fall from:
    a fall after it has faded is not flagged, and best.pt is chosen among the later evaluations, as replayed."""
    _fake_health(monkeypatch, [(0.9, 0.5), (0.5, 0.6), (0.45, 0.7)])  # high while the disc is imposed, then F's own
    t = _folder_trainer(tmp_path, tiny_config, name='centre', lambda_centre=1., centre_iters=5, on_degrade='stop')
    s = t.fit()
    assert s['stopped_by'] != 'degraded' and s['best']['iter'] == 9 and s['best_by']['peak']['iter'] == 6
    assert s['best']['iter'] == label_free_choice(load_metrics(t.history), scaffold=5)['iter']
    assert 'g_centre' in load_metrics(t.history)[0]


def test_a_restart_starts_the_health_rule_over(tmp_path, tiny_config, monkeypatch):
    """After the paper's restart on early collapse, the new start is judged against its own best health, not the
    collapsed start's: its lower scores are not flagged, and best.pt becomes one of its models, as replayed."""
    _fake_health(monkeypatch, [(0.9, 0.5), (0.3, 0.6), (0.32, 0.7), (0.35, 0.8)])  # a start that collapses, then a fresh one
    t = _folder_trainer(tmp_path, tiny_config, name='restart', on_degrade='stop', collapse_check_every=1, collapse_check_until=9)
    t.collapsed = lambda: t.restarts == 0 and t.iteration == 4  # the first start "collapses" after one evaluation
    s = t.fit()
    assert s['restarts'] == 1 and s['stopped_by'] != 'degraded'
    assert s['best']['iter'] == 9 and s['best']['restarts'] == 1
    assert s['best']['iter'] == label_free_choice(load_metrics(t.history))['iter']
    assert load_checkpoint(Path(s['run_dir']) / 'best.pt')['restarts'] == 1

def _sabotaged(trainer, from_iter):
    "Make F degenerate from `from_iter` on: after every generator step its last bias is set so one region is everything."
    step = trainer.generator_step
    def sabotaged_step():
        logs = step()
        if trainer.iteration + 1 >= from_iter:
            with torch.no_grad(): trainer.model.F.layers[-1][-1].bias.fill_(30.)
        return logs
    trainer.generator_step = sabotaged_step
    return trainer


def _config(tiny_config, **kw):
    return tiny_config(**{**dict(iters=60, eval_every=10, ckpt_every=10, select='health', degrade_patience=2,
                                 data_kwargs={'n_images': 64}, n_val=16), **kw})


def test_health_flags_a_degenerating_run_which_stops_with_the_healthy_model(tiny_config):
    t = _sabotaged(Trainer(_config(tiny_config, on_degrade='stop', name='stop')), from_iter=21)
    s = t.fit()
    assert s['stopped_by'] == 'degraded' and s['iterations'] == 40  # bad at 30 and 40: two evaluations in a row
    healths = [r['health']['score'] for r in t.history if 'health' in r]
    assert len(healths) == 5  # 10, 20, 30, 40 and the final evaluation of the model the run ends with
    assert healths[-3] < 0.75 * max(healths[:2]) and healths[-2] < 0.75 * max(healths[:2])
    assert s['best']['iter'] in (10, 20)
    assert [r['to_iter'] for r in t.history if r.get('event') == 'stop'] == [s['best']['iter']]
    run, x = Path(s['run_dir']), t._scale(t.images[t.health_idx])
    best, last = load_model(run / 'best.pt'), load_model(run / 'last.pt')
    assert mask_health(best.masks(x), x)['score'] > 2 * healths[-2]  # the model handed over is the healthy one
    torch.testing.assert_close(last.masks(x), best.masks(x))  # and no file of the run holds the degraded one
    assert best.masks(x).mean((0, 2, 3)).min() > 0.05
    assert s['final_health']['score'] == pytest.approx(healths[-1]) and healths[-1] > 2 * healths[-2]


def test_a_degenerating_run_rolls_back_at_rollback_lr(tiny_config):
    t = _sabotaged(Trainer(_config(tiny_config, on_degrade='rollback', max_rollbacks=1, rollback_lr=0.5, name='rollback')), from_iter=21)
    s = t.fit()
    events = [r for r in t.history if r.get('event') == 'rollback']
    assert len(events) == 1 and events[0]['iter'] == 40 and events[0]['to_iter'] == s['best']['iter']
    assert s['rollbacks'] == 1 and t.lr_scale == 0.5 and events[0]['lr_scale'] == 0.5
    assert all(g['lr'] == pytest.approx(t.base_lrs[k] * 0.5) for k, o in t.opts.items() for g in o.param_groups)
    # the sabotage goes on: bad at 50 and 60 (patience 2), flagged at 60 with the rollback spent; the run goes on to its end ...
    assert s['stopped_by'] == 'iters' and s['iterations'] == 60 and s['degraded_at'] == 60
    # ... and ends with best.pt's model, which the last evaluation scores and last.pt holds
    assert [r['to_iter'] for r in t.history if r.get('event') == 'stop'] == [s['best']['iter']] and s['best']['iter'] <= 20
    run, x = Path(s['run_dir']), t._scale(t.images[t.health_idx])
    best, last = load_model(run / 'best.pt'), load_model(run / 'last.pt')
    torch.testing.assert_close(last.masks(x), best.masks(x))
    assert s['final_health']['score'] == pytest.approx(mask_health(best.masks(x), x)['score'], abs=1e-4)
    assert s['final_health']['score'] > 2 * [r['health']['score'] for r in t.history if 'health' in r][-2]
    h = next(r['health'] for r in t.history if r['iter'] == s['best']['iter'] and 'health' in r)
    assert t.area_anchor == (h['object_region'], h['object_area']) == tuple(events[0]['anchor'])  # best.pt's object share
    assert load_checkpoint(run / 'last.pt')['robust']['area_anchor'] == t.area_anchor  # a resumed run keeps it


def test_the_anchor_holds_the_object_share_after_a_rollback(tiny_config):
    "With `lambda_anchor`, F's steps after a rollback pull the object region's share back to best.pt's; without, they do not."
    def share_after_rollback(lam):
        t = Trainer(_config(tiny_config, on_degrade='rollback', lambda_anchor=lam, iters=20, name=f'anchor{lam}'))
        t.fit(); rollback(t)
        o, a = t.area_anchor
        t.area_anchor = (o, a - 0.3)  # as if best.pt's object had covered 30% less of the image
        for g in t.opts['F'].param_groups: g['lr'] = 5e-3  # a few large steps instead of hundreds
        for _ in range(15): t.generator_step()
        x = t._scale(t.images[t.health_idx])
        with torch.no_grad(): share = t.model.F(x)[:, o].mean().item()
        return a - 0.3, share, a
    target, held, before = share_after_rollback(1000.)
    _, free, _ = share_after_rollback(0.)
    assert abs(held - target) < abs(free - target) - 0.1 and held < before - 0.1


def test_a_run_that_degrades_with_its_rollbacks_spent_goes_on_to_its_end(tiny_config):
    "A dip after the last rollback no longer stops the run: it trains to its budget, then ends with best.pt's model."
    t = Trainer(_config(tiny_config, on_degrade='rollback', max_rollbacks=0, name='dip', degrade_patience=1))
    step, bias = t.generator_step, t.model.F.layers[-1][-1].bias
    def dip():  # F degenerate at the evaluation at 30 only: its last bias is put back afterwards
        logs = step()
        with torch.no_grad():
            if t.iteration + 1 == 21: t.saved_bias = bias.clone()
            if t.iteration + 1 == 30: bias.fill_(30.)
            if t.iteration + 1 == 31: bias.copy_(t.saved_bias)
        return logs
    t.generator_step = dip
    s = t.fit()
    healths = {r['iter']: r['health']['score'] for r in t.history if 'health' in r and r['iter'] < 60}
    assert s['degraded_at'] == 30 and s['stopped_by'] == 'iters' and s['iterations'] == 60  # flagged at 30, went on
    assert healths[30] < 0.5 * healths[20] and min(healths[40], healths[50]) > 0.85 * healths[20]  # a dip, then recovered
    assert [r['to_iter'] for r in t.history if r.get('event') == 'stop'] == [s['best']['iter']]  # ends with best.pt


def test_rollback_restores_the_best_weights(tiny_config):
    t = Trainer(_config(tiny_config, on_degrade='rollback', name='restore', iters=10))
    t.fit()  # best.pt at iteration 10
    best = load_checkpoint(Path(t.run_dir) / 'best.pt')
    with torch.no_grad():
        for p in t.model.parameters(): p.add_(1.)
    from redo_nb.robust import rollback
    rollback(t)
    for k, v in t.model.state_dict().items(): assert torch.equal(v.cpu(), best['model'][k]), k
    assert t.iteration == 10 and t.rollbacks == 1
    # by default (rollback_lr=1) the run goes on at its own learning rates
    assert t.lr_scale == 1. and all(g['lr'] == pytest.approx(t.base_lrs[k]) for k, o in t.opts.items() for g in o.param_groups)


def test_augmentation_ema_and_their_state_survive_a_checkpoint(tiny_config):
    cfg = _config(tiny_config, iters=8, eval_every=8, ckpt_every=8, ema_f=0.9, augment='color,translation', ada_target=-1.0,
                  lr_decay=0.5, name='robust')
    t = Trainer(cfg)
    s = t.fit()
    assert t.ada_p == pytest.approx(8 / 500)  # r_t >= -1: every 4 iterations p moves up by 4 / ada_iters
    ck = load_checkpoint(Path(s['run_dir']) / 'last.pt')
    assert ck['robust']['ada_p'] == t.ada_p
    logged = [r['ada_p'] for r in t.history if 'ada_p' in r]  # the strength is in metrics.jsonl, rising
    assert logged and logged[-1] == pytest.approx(t.ada_p, abs=1e-4) and logged == sorted(logged)
    assert any(not torch.equal(a, b) for a, b in zip(t.F_ema.state_dict().values(), t.model.F.state_dict().values()))
    model = load_model(Path(s['run_dir']) / 'last.pt')  # the averaged F is the one handed over
    for k, v in model.F.state_dict().items(): torch.testing.assert_close(v.float(), t.F_ema.state_dict()[k].float())
    assert all(g['lr'] < t.base_lrs[k] for k, o in t.opts.items() for g in o.param_groups)  # decayed by the end


@pytest.mark.skipif(not (SHARED / 'oxford17_flowers').is_dir(), reason=f'Oxford-17 not found at {SHARED} (development data)')
def test_health_ranks_true_masks_above_degenerate_ones_on_photos():
    from redo_nb.photos import oxford17_flowers
    from redo_nb.metrics import centred_disc
    data = oxford17_flowers(SHARED / 'oxford17_flowers', 64, 'all', labelled_only=True)
    x, gt = data.batch(torch.arange(0, len(data), 8))
    obj = (gt == 1).float()
    obj[gt == 255] = 0
    two = lambda m: torch.stack([m, 1 - m], 1)
    edges = obj - (-torch.nn.functional.max_pool2d(-obj[:, None], 3, 1, 1))[:, 0]
    score = lambda m: mask_health(two(m), x)['score']
    true = score(obj)
    assert true > score(centred_disc(obj.shape, 0.7).float()) + 0.1  # a position prior
    assert true > score(edges) + 0.1                                  # outlines along the object's edges
    assert true > score(torch.full_like(obj, 0.98)) + 0.1              # one region is everything
