"Cross-process tests of redo_nb.train: exact resume after SIGKILL, two-process training, NaN handling."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from redo_nb.config import get_config
from redo_nb.engine import load_checkpoint
from redo_nb.train import Trainer

# the tiny configuration (conftest.py), logged at every step, checkpointed every 4 steps, with collapse checks
RUN = dict(log_every=1, eval_every=20, ckpt_every=4, collapse_check_every=10, collapse_check_until=20)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}


def _train_cmd(tiny, out, name, iters, resume=False):
    cfg = tiny(**RUN, out_dir=str(out), name=name, iters=iters, resume=resume)
    code = f"from redo_nb.train import train; train('paper', **{cfg!r})"
    return [sys.executable, '-c', code]


def _loss_records(run):
    "The per-step loss records of metrics.jsonl, without wall-clock times."
    recs = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != 'minutes'} for r in recs if 'loss_g' in r]


def test_resume_after_sigkill_is_exact(tmp_path, tiny):
    iters = 24
    full = subprocess.Popen(_train_cmd(tiny, tmp_path, 'full', iters), env=ENV)
    killed = subprocess.Popen(_train_cmd(tiny, tmp_path, 'killed', iters), env=ENV)
    run = tmp_path / 'killed'
    deadline = time.time() + 120
    # wait for a checkpoint after the first one, so the kill lands mid-run with a real history behind it
    while time.time() < deadline and killed.poll() is None:
        if (run / 'last.pt').exists() and len(_loss_records(run)) >= 8: break
        time.sleep(0.05)
    assert killed.poll() is None, 'the run finished before it could be killed: make it longer'
    killed.send_signal(signal.SIGKILL); killed.wait()
    for p in run.glob('*.pt'):  # every complete checkpoint loads safely
        ck = torch.load(p, weights_only=True)
        assert 0 < ck['iteration'] < iters
    resumed = subprocess.run(_train_cmd(tiny, tmp_path, 'killed', iters, resume=True), env=ENV, timeout=120)
    assert resumed.returncode == 0
    assert full.wait(timeout=120) == 0
    assert not list(run.glob('.*.tmp')), 'a partial checkpoint was left behind'
    a, b = load_checkpoint(tmp_path / 'full' / 'last.pt'), load_checkpoint(run / 'last.pt')
    assert a['iteration'] == b['iteration'] == iters and a['restarts'] == b['restarts']
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    assert _loss_records(tmp_path / 'full') == _loss_records(run)  # the log was rewound to the checkpoint


DDP_SCRIPT = '''
import os, sys, torch, torch.distributed as dist
from redo_nb import engine
from redo_nb.config import get_config
from redo_nb.train import Trainer
engine.cpu_bf16_pays = lambda num_threads: os.environ['RANK'] == '1'  # the two ranks' timings disagree
cfg = get_config('paper', out_dir=sys.argv[1], name='ddp', iters=3, **{tiny!r})
t = Trainer(cfg)
w0 = torch.cat([p.detach().flatten() for p in t.model.parameters()]).clone()
t.fit()
w = torch.cat([p.detach().flatten() for p in t.model.parameters()])
torch.save(dict(w0=w0, w=w, seed=t.gen.initial_seed(), world=t.world, amp=str(t.amp_dtype)), f'{{sys.argv[1]}}/rank{{t.rank}}.pt')
dist.destroy_process_group()
'''


def test_two_processes_stay_in_sync(tmp_path, tiny):
    script = tmp_path / 'ddp.py'
    # batch_size=16: each rank's batch draws both regions (all 16 in one region: 2 ** -15 per step), which
    # average_gradients needs today (see the next test)
    script.write_text(DDP_SCRIPT.format(tiny=tiny(**{**RUN, 'eval_every': 3, 'ckpt_every': 3, 'batch_size': 16, 'amp': 'auto'})))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script), str(tmp_path)]
    r = subprocess.run(cmd, env=ENV, timeout=180, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f'rank{k}.pt') for k in (0, 1))
    assert r0['world'] == r1['world'] == 2
    assert r0['amp'] == r1['amp'] == 'None'  # every rank runs rank 0's precision
    assert r0['seed'] != r1['seed']  # each rank draws its own batches
    assert torch.equal(r0['w0'], r1['w0']) and torch.equal(r0['w'], r1['w'])  # ... but the weights agree
    assert not torch.equal(r0['w0'], r0['w'])  # and they trained
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ['ddp']  # one run folder, from rank 0
    assert load_checkpoint(tmp_path / 'ddp' / 'last.pt')['iteration'] == 3


DDP_ROLLBACK_SCRIPT = '''
import sys, torch, torch.distributed as dist
from redo_nb.config import get_config
from redo_nb.robust import rollback
from redo_nb.train import Trainer
cfg = get_config('paper', out_dir=sys.argv[1], name='ddp', iters=3, select='health', on_degrade='rollback', lambda_anchor=10., **{tiny!r})
t = Trainer(cfg)
t.fit()
rollback(t)  # as a degrading run does, on every rank
t.generator_step()
torch.save(dict(anchor=t.area_anchor, w=torch.cat([p.detach().flatten() for p in t.model.parameters()])), f'{{sys.argv[1]}}/rank{{t.rank}}.pt')
dist.destroy_process_group()
'''


def test_two_processes_roll_back_to_the_same_anchor(tmp_path, tiny):
    "Evaluations are logged on rank 0 only: a rollback gives every rank rank 0's anchor, and the ranks stay in sync."
    script = tmp_path / 'ddp.py'
    script.write_text(DDP_ROLLBACK_SCRIPT.format(tiny=tiny(**{**RUN, 'eval_every': 3, 'ckpt_every': 3, 'batch_size': 16})))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script), str(tmp_path)]
    r = subprocess.run(cmd, env=ENV, timeout=180, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f'rank{k}.pt') for k in (0, 1))
    assert r0['anchor'] is not None and r0['anchor'] == r1['anchor']
    assert torch.equal(r0['w'], r1['w'])


def test_average_gradients_sends_the_same_buffer_when_a_region_was_not_drawn(monkeypatch):
    "Every rank all-reduces a buffer of the same size whatever gradients it lacks; a gradient no rank has stays None."
    from redo_nb import engine
    other = torch.tensor([2., 2., 2., 6., 6., 1., 1.])  # the other rank: both gradients (3 + 2 values), two flags
    sizes = []
    def all_reduce(t, *a, **kw): sizes.append(t.numel()); t.add_(other)
    monkeypatch.setattr(engine.dist, 'all_reduce', all_reduce)
    drawn, not_drawn = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    drawn.grad = torch.full((3,), 4.)
    engine.average_gradients([drawn, not_drawn], world=2)
    assert sizes == [7]  # 5 gradient values and 2 flags, as on the other rank
    assert torch.equal(drawn.grad, torch.full((3,), 3.)) and torch.equal(not_drawn.grad, torch.full((2,), 3.))
    other.zero_()  # no rank drew the second region: it keeps no gradient, so Adam leaves it alone
    untouched = torch.nn.Parameter(torch.zeros(2))
    engine.average_gradients([drawn, untouched], world=2)
    assert untouched.grad is None and torch.equal(drawn.grad, torch.full((3,), 1.5))


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, tiny, one_thread):
    t = Trainer(get_config('paper', out_dir=str(tmp_path), name='nan', iters=4, **tiny(**{**RUN, 'ckpt_every': 2})))
    t.fit()
    t.cfg.iters = 8
    with torch.no_grad(): next(t.model.D.parameters()).fill_(float('nan'))
    with pytest.raises(FloatingPointError, match='at iteration 5'):
        t.fit()
    ck = load_checkpoint(tmp_path / 'nan' / 'last.pt')
    assert ck['iteration'] == 4
    assert all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())
