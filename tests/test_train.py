"Cross-process tests of redo_nb.train: exact resume after SIGKILL, two-process training, NaN handling."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from redo_nb.train import Trainer, get_config, load_checkpoint

# a model small enough for a few iterations per second on one CPU thread
TINY = dict(img_size=32, batch_size=4, ch_f=8, ch_g=8, ch_d=8, n_val=8, progress=False, num_threads=1,
            data_kwargs={'n_images': 32}, log_every=1, eval_every=20, ckpt_every=4,
            collapse_check_every=10, collapse_check_until=20)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}


def _train_cmd(out, name, iters, resume=False):
    cfg = dict(TINY, out_dir=str(out), name=name, iters=iters, resume=resume)
    code = f"from redo_nb.train import train; train('cpu', **{cfg!r})"
    return [sys.executable, '-c', code]


def _loss_records(run):
    "The per-step loss records of metrics.jsonl, without wall-clock times."
    recs = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != 'minutes'} for r in recs if 'loss_g' in r]


def test_resume_after_sigkill_is_exact(tmp_path):
    iters = 24
    full = subprocess.Popen(_train_cmd(tmp_path, 'full', iters), env=ENV)
    killed = subprocess.Popen(_train_cmd(tmp_path, 'killed', iters), env=ENV)
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
    resumed = subprocess.run(_train_cmd(tmp_path, 'killed', iters, resume=True), env=ENV, timeout=120)
    assert resumed.returncode == 0
    assert full.wait(timeout=120) == 0
    assert not list(run.glob('.*.tmp')), 'a partial checkpoint was left behind'
    a, b = load_checkpoint(tmp_path / 'full' / 'last.pt'), load_checkpoint(run / 'last.pt')
    assert a['iteration'] == b['iteration'] == iters and a['restarts'] == b['restarts']
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    assert _loss_records(tmp_path / 'full') == _loss_records(run)  # the log was rewound to the checkpoint


DDP_SCRIPT = '''
import sys, torch, torch.distributed as dist
from redo_nb.train import Trainer, get_config
cfg = get_config('cpu', out_dir=sys.argv[1], name='ddp', iters=3, **{tiny!r})
t = Trainer(cfg)
w0 = torch.cat([p.detach().flatten() for p in t.model.parameters()]).clone()
t.fit()
w = torch.cat([p.detach().flatten() for p in t.model.parameters()])
torch.save(dict(w0=w0, w=w, seed=t.gen.initial_seed(), world=t.world), f'{{sys.argv[1]}}/rank{{t.rank}}.pt')
dist.destroy_process_group()
'''


def test_two_processes_stay_in_sync(tmp_path):
    script = tmp_path / 'ddp.py'
    script.write_text(DDP_SCRIPT.format(tiny=dict(TINY, eval_every=3, ckpt_every=3)))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script), str(tmp_path)]
    r = subprocess.run(cmd, env=ENV, timeout=180, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f'rank{k}.pt') for k in (0, 1))
    assert r0['world'] == r1['world'] == 2
    assert r0['seed'] != r1['seed']  # each rank draws its own batches
    assert torch.equal(r0['w0'], r1['w0']) and torch.equal(r0['w'], r1['w'])  # ... but the weights agree
    assert not torch.equal(r0['w0'], r0['w'])  # and they trained
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ['ddp']  # one run folder, from rank 0
    assert load_checkpoint(tmp_path / 'ddp' / 'last.pt')['iteration'] == 3


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    t = Trainer(get_config('cpu', out_dir=str(tmp_path), name='nan', iters=4, **dict(TINY, ckpt_every=2)))
    t.fit()
    t.cfg.iters = 8
    with torch.no_grad(): next(t.model.D.parameters()).fill_(float('nan'))
    with pytest.raises(FloatingPointError, match='at iteration 5'):
        t.fit()
    ck = load_checkpoint(tmp_path / 'nan' / 'last.pt')
    assert ck['iteration'] == 4
    assert all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())
