"""In-process checks of `redo_nb.train.Trainer` at tiny sizes: the paper's shared delta, the released code's `redraw='all'`,
restarts on collapse inside `fit`, and the wall-clock budget. Each test takes a few seconds on one CPU thread."""
import json
from pathlib import Path

import pytest
import torch

from redo_nb.engine import load_checkpoint
from redo_nb.train import Trainer

pytestmark = pytest.mark.usefixtures('one_thread')


def _copy(params) -> list:
    return [p.detach().clone() for p in params]


def _unchanged(before, params) -> bool:
    return all(torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def _ids(params) -> set:
    return {id(p) for p in params}


def test_shared_delta_trains_only_its_heads_and_leaves_d_to_the_discriminator_step(tiny_config):
    "delta='shared' (the paper): delta's optimiser holds its heads only; generator steps never move D, D steps never F, G or delta."
    t = Trainer(tiny_config(delta='shared'))
    m = t.model
    heads, trunk, d_all = list(m.delta.heads.parameters()), list(m.D.trunk.parameters()), list(m.D.parameters())
    opt_params = lambda k: [p for g in t.opts[k].param_groups for p in g['params']]
    assert _ids(opt_params('delta')) == _ids(heads)
    assert not _ids(opt_params('delta')) & _ids(d_all)
    assert _ids(opt_params('D')) == _ids(d_all) and not _ids(opt_params('D')) & _ids(heads)  # D: trunk and last linear
    assert not _ids(m.delta.parameters()) & _ids(trunk)  # the trunk is D's, not registered twice
    others = dict(F=list(m.F.parameters()), G=list(m.G.parameters()), heads=heads)
    for step in range(3):
        d_before, o_before = _copy(d_all), {k: _copy(v) for k, v in others.items()}
        t.generator_step()
        assert _unchanged(d_before, d_all), f'generator step {step} moved D (its trunk is shared with delta)'
        if step == 0: assert all(p.grad is None for p in d_all)  # D is frozen: no gradient reaches it, not even the trunk's
        for k, v in others.items(): assert not _unchanged(o_before[k], v), f'generator step {step} left {k} unchanged'
        o_before, t_before = {k: _copy(v) for k, v in others.items()}, _copy(trunk)
        t.discriminator_step()
        assert not _unchanged(t_before, trunk), f'discriminator step {step} left D\'s trunk unchanged'
        for k, v in others.items(): assert _unchanged(o_before[k], v), f'discriminator step {step} moved {k}'
        t.iteration += 1


def test_redraw_all_trains_end_to_end(tiny_config):
    "redraw='all' (the released code): D judges the B*n images with one region redrawn, delta predicts all n codes."
    t = Trainer(tiny_config(redraw='all', n=3, iters=3, log_every=1))
    B, n, size_z = t.cfg.batch_size, t.cfg.n, t.cfg.size_z
    seen = {'D': [], 'heads': []}
    t.model.D.register_forward_hook(lambda mod, inp, out: seen['D'].append((inp[0].shape[0], out.detach())))
    t.model.delta.heads.register_forward_hook(lambda mod, inp, out: seen['heads'].append(out.detach()))

    state = t.gen.get_state()
    logs = t.generator_step()
    g = torch.Generator().set_state(state)  # the trainer's draws, repeated: batch, regions, noise
    torch.randint(len(t.images), (B,), generator=g); torch.randint(n, (B,), generator=g)
    z = torch.randn(B, n, size_z, generator=g)
    assert [k for k, _ in seen['D']] == [B * n]
    (z_hat,) = seen['heads']
    assert z_hat.shape == (B, n * size_z)  # one code per region of each of the B fully redrawn images
    z_err = (z_hat.view(B, n, size_z) - z).pow(2).sum((1, 2)).mean()  # every region's code is reconstructed
    torch.testing.assert_close(logs['g_z'], z_err, rtol=1e-5, atol=1e-5)
    d_fake = seen['D'][0][1]
    torch.testing.assert_close(logs['g_adv'], -d_fake.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs['loss_g'], -d_fake.mean() + 5 / (n * size_z) * z_err, rtol=1e-5, atol=1e-5)

    seen['D'].clear()
    logs = t.discriminator_step()
    ((k, d),) = seen['D']
    assert k == B + B * n  # B real images, then B*n fakes
    want = torch.relu(1 - d[:B]).mean() + torch.relu(1 + d[B:]).mean()
    torch.testing.assert_close(logs['loss_d'], want, rtol=1e-5, atol=1e-6)

    seen['D'].clear()
    summary = t.fit()
    steps = [r for r in t.history if 'loss_g' in r]
    assert summary['iterations'] == 3 and [r['iter'] for r in steps] == [1, 2, 3]
    for r in steps:
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ('loss_g', 'loss_d', 'g_z', 'g_adv'))
        assert sum(r[f'area{j}'] for j in range(n)) == pytest.approx(1, abs=1e-4)
    assert [k for k, _ in seen['D']] == [B * n, B + B * n] * 3  # the same in fit, and nowhere else


def test_collapse_restarts_inside_fit_then_goes_on_when_restarts_are_spent(tiny_config):
    "A check that always fires (threshold above any region's area): one restart from iteration 0, then a warning and no more."
    t = Trainer(tiny_config(iters=4, log_every=1, collapse_threshold=0.9, collapse_check_every=2,
                            collapse_check_until=2, max_restarts=1))
    assert t.collapsed()  # the smallest of 2 areas is at most 0.5 < 0.9
    areas = t.region_areas()
    with torch.no_grad():  # region_areas: F's mean masks over the fixed batch, by hand
        M = t.model.masks(t.images[t.fixed_idx].float() / 127.5 - 1)
    torch.testing.assert_close(areas, M.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    t.cfg.collapse_threshold = 0.
    assert not t.collapsed()
    t.cfg.collapse_threshold = 0.9

    first = _copy(t.model.F.parameters())
    rebuilt, build = [], t._build
    def spy():  # what restart() rebuilds, recorded before training moves it
        build(); rebuilt.append(_copy(t.model.F.parameters()))
    t._build = spy
    with pytest.warns(UserWarning, match='collapsed at iteration 2 but max_restarts=1 is spent: going on'):
        summary = t.fit()
    assert summary['restarts'] == t.restarts == 1 and summary['iterations'] == 4 and summary['stopped_by'] == 'iters'
    events = [r for r in t.history if r.get('event') == 'restart']
    assert len(events) == 1 and events[0]['iter'] == 2 and events[0]['restarts'] == 1
    assert len(events[0]['areas']) == 2 and sum(events[0]['areas']) == pytest.approx(1, abs=1e-4)
    assert [r['iter'] for r in t.history if 'loss_g' in r] == [1, 2, 1, 2, 3, 4]  # the counter started again
    (weights,) = rebuilt
    assert not _unchanged(first, weights)  # new networks (a new seed), not the collapsed ones
    for k, opt in t.opts.items():  # and new optimisers, over the new networks, that took the 4 steps since
        assert _ids(p for g in opt.param_groups for p in g['params']) == _ids(t.params[k]), k
        steps = {int(st['step']) for st in opt.state.values()}  # (a G_k whose region no image drew skips a step)
        assert max(steps) == 4 and (steps == {4} or k == 'G'), (k, steps)
    ck = load_checkpoint(Path(summary['run_dir']) / 'last.pt')
    assert ck['restarts'] == 1 and ck['iteration'] == 4


def test_max_minutes_stops_before_iters(tiny_config):
    "A budget of 0.001 minutes: fit stops at its next check, says why, and still evaluates and saves what it has."
    iters = 200
    t = Trainer(tiny_config(iters=iters, max_minutes=0.001))
    summary = t.fit()
    assert summary['stopped_by'] == 'max_minutes'
    assert 1 <= summary['iterations'] < iters  # the budget is checked before each iteration, the first included
    assert load_checkpoint(Path(summary['run_dir']) / 'last.pt')['iteration'] == summary['iterations']
    assert summary['final']['model']['image']['n_images'] == t.cfg.n_val  # the final evaluation ran
    saved = json.loads((Path(summary['run_dir']) / 'summary.json').read_text())
    assert saved['stopped_by'] == 'max_minutes' and saved['iterations'] == summary['iterations']
