"""The CUDA paths, on a GPU: training in bf16 and in fp16 with loss scaling, channels-last, compile on and off; a
checkpoint written on the GPU read on the CPU; `segment` on the GPU against the CPU; `torchrun` with NCCL.

Every test skips without CUDA (CI has none); `benchmarks/gpu_check.py` runs them on a lent GPU. They use the paper
preset's networks at 128 px (the kernels and shapes the paper preset runs) on a few synthetic images.

Tolerances, masks in [0, 1]:
- fp32 on both sides (TF32 off): the GPU's masks are the CPU's within 1e-3 (max abs).
- bf16 autocast on the GPU against fp32 on the CPU: mean abs difference <= 0.01, max <= 0.1 (measured on a CPU in bf16
  against fp32: 0.002 and 0.02), labels equal on >= 98% of the pixels.
- refined masks (mean field on colour histograms, which amplifies small differences near a colour-bin edge): mean abs
  difference <= 1e-3 and labels equal on >= 99.5% of the pixels.
"""
import contextlib, json, os, subprocess, sys, warnings
from pathlib import Path

import pytest
import torch

from redo_nb.config import get_config
from redo_nb.engine import load_checkpoint
from redo_nb.inference import load_model, segment
from redo_nb.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs a CUDA GPU (benchmarks/gpu_check.py runs these on a lent one)')
ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(img_size=128, batch_size=8, val_split=None, progress=False, data_kwargs={'n_images': 32}, device='cuda')
DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'off': None}


def _steps(t: Trainer, k: int) -> list:
    "The logs of `k` training iterations, read back to the host."
    out = []
    for _ in range(k):
        t.iteration += 1
        out.append({n: v.float().item() for n, v in {**t.generator_step(), **t.discriminator_step()}.items()})
    return out


@contextlib.contextmanager
def _full_fp32():
    "TF32 off for matrix products and convolutions (the Trainer turns it on process-wide), restored after."
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try: yield
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _flat(model) -> torch.Tensor: return torch.cat([p.detach().float().flatten() for p in model.parameters()])


@pytest.mark.parametrize('amp,channels_last,fast', [('bf16', True, True), ('fp16', True, True), ('bf16', False, True),
                                                    ('off', True, True), ('off', False, False)],
                         ids=['bf16-channels_last', 'fp16-channels_last', 'bf16-contiguous', 'fp32-channels_last', 'plain'])
def test_training_iterations_are_finite(tmp_path, amp, channels_last, fast):
    "Five iterations: every loss finite, the weights move and stay finite, autocast and loss scaling as asked."
    t = Trainer(get_config('paper', **SMALL, amp=amp, channels_last=channels_last, fast=fast, out_dir=str(tmp_path)))
    assert t.device.type == 'cuda' and t.amp_dtype is (DTYPES[amp] if fast else None)
    w0 = _flat(t.model).clone()
    logs = _steps(t, 5)
    bad = [(k, v) for rec in logs for k, v in rec.items() if not torch.isfinite(torch.tensor(v))]
    assert not bad, f'non-finite losses: {bad[:5]}'
    w = _flat(t.model)
    assert torch.isfinite(w).all() and not torch.equal(w, w0)
    scalers = list(t.scalers.values())
    if amp == 'fp16':  # loss scaling on, and its scale still a usable number after the steps
        assert all(s.is_enabled() for s in scalers)
        assert all(0 < s.get_scale() < float('inf') for s in scalers)
    else: assert not any(s.is_enabled() for s in scalers)
    convs = [p for p in t.model.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    if t.channels_last: assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert t.channels_last == (channels_last and fast)


def test_checkpoint_written_on_gpu_loads_on_cpu_with_the_same_masks(tmp_path):
    "Train on the GPU (bf16), save; the checkpoint loads on the CPU bit for bit and gives the GPU's masks (fp32) within 1e-3."
    t = Trainer(get_config('paper', **SMALL, out_dir=str(tmp_path), name='gpu'))
    _steps(t, 3)
    t.save_checkpoint('last.pt')
    path = t.run_dir/'last.pt'
    ck = load_checkpoint(path)
    assert all(v.device.type == 'cpu' for v in ck['model'].values())
    cpu, gpu = load_model(path, 'cpu'), load_model(path, 'cuda')
    ref = {k: v.detach().cpu() for k, v in t.model.state_dict().items()}
    for k, v in cpu.state_dict().items(): assert torch.equal(v, ref[k]), k
    images = t.data.images[:16]
    with _full_fp32():
        m_cpu = segment(cpu, images, batch_size=8, amp='off')
        m_gpu = segment(gpu, images, batch_size=8, amp='off')
        m_trainer = segment(t.model, images, batch_size=8, amp='off')
    assert (m_gpu - m_cpu).abs().max() <= 1e-3, (m_gpu - m_cpu).abs().max()
    torch.testing.assert_close(m_trainer, m_gpu, rtol=0, atol=1e-5)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "A model trained for a few iterations on the GPU, on the GPU and on the CPU, and 16 of its images."
    t = Trainer(get_config('paper', **SMALL, out_dir=str(tmp_path_factory.mktemp('seg')), name='seg'))
    _steps(t, 3)
    t.save_checkpoint('last.pt')
    return load_model(t.run_dir/'last.pt', 'cuda'), load_model(t.run_dir/'last.pt', 'cpu'), t.data.images[:16]


def test_segment_on_gpu_matches_cpu_in_fp32(models):
    gpu, cpu, images = models
    with _full_fp32(): diff = (segment(gpu, images, 8, amp='off') - segment(cpu, images, 8, amp='off')).abs()
    assert diff.max() <= 1e-3, diff.max()


def test_segment_in_bf16_on_gpu_is_close_to_cpu(models):
    gpu, cpu, images = models
    got, ref = segment(gpu, images, 8, amp='auto'), segment(cpu, images, 8, amp='off')  # 'auto': bf16 on the card
    diff = (got - ref).abs()
    assert got.dtype == torch.float32 and got.device.type == 'cpu'
    torch.testing.assert_close(got.sum(1), torch.ones_like(got[:, 0]), rtol=0, atol=1e-4)  # masks sum to one
    assert diff.mean() <= 0.01 and diff.max() <= 0.1, (diff.mean(), diff.max())
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.98


def test_refined_segment_on_gpu_matches_cpu(models):
    gpu, cpu, images = models
    with _full_fp32():
        got, ref = segment(gpu, images, 8, amp='off', refine=True), segment(cpu, images, 8, amp='off', refine=True)
    assert (got - ref).abs().mean() <= 1e-3
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.995


TORCHRUN_SCRIPT = r'''
import json, os, sys, torch, torch.distributed as dist
from redo_nb.config import get_config
from redo_nb.engine import average_gradients
from redo_nb.train import Trainer
out = sys.argv[1]
local = int(os.environ['LOCAL_RANK'])
torch.cuda.set_device(local)
dist.init_process_group('nccl', device_id=torch.device('cuda', local))
rank, world = dist.get_rank(), dist.get_world_size()
res = dict(rank=rank, world=world, backend=dist.get_backend(), nccl='.'.join(map(str, torch.cuda.nccl.version())))
# the collectives the Trainer uses with several processes, on CUDA tensors through NCCL
x = torch.arange(4., device='cuda'); dist.all_reduce(x); res['all_reduce'] = x.tolist()
flag = torch.ones(1, device='cuda'); dist.broadcast(flag, 0); res['broadcast'] = flag.item()
gens = [torch.empty(5, dtype=torch.uint8, device='cuda') for _ in range(world)]
dist.all_gather(gens, torch.arange(5, dtype=torch.uint8, device='cuda')); res['all_gather'] = [g.tolist() for g in gens]
obj = [{'iou': 0.5}, True] if rank == 0 else [None, None]; dist.broadcast_object_list(obj, 0); res['objects'] = obj
# device 'auto' is cuda:LOCAL_RANK under torchrun; a short fit with evaluation, samples and checkpoints
cfg = get_config('paper', img_size=128, batch_size=8, data_kwargs={'n_images': 32}, n_val=16, iters=4, eval_every=2,
                 ckpt_every=2, log_every=2, progress=False, device='auto', out_dir=out, name='torchrun')
t = Trainer(cfg)
t.iteration += 1; t.generator_step()
grads = [p.grad.clone() for p in t.params['F'] if p.grad is not None]
average_gradients(t.params['F'], 2)  # one process in the group: the flattened all-reduce returns them, halved
res['average_gradients_ok'] = all(torch.allclose(p.grad, 0.5 * g) for p, g in zip([p for p in t.params['F'] if p.grad is not None], grads))
t.iteration = 0
s = t.fit()
res.update(device=str(t.device), iterations=s['iterations'], best=s['best'], trainer_world=t.world)
dist.barrier()
dist.destroy_process_group()
with open(os.path.join(out, f'rank{rank}.json'), 'w') as f: json.dump(res, f)
'''


def test_torchrun_with_nccl(tmp_path):
    "`torchrun --nproc_per_node 1`: an NCCL process group, the Trainer's collectives on CUDA tensors, and a short fit on cuda:LOCAL_RANK."
    script = tmp_path/'nccl.py'
    script.write_text(TORCHRUN_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1', str(script), str(tmp_path)]
    r = subprocess.run(cmd, env=env, timeout=240, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((tmp_path/'rank0.json').read_text())
    assert res['backend'] == 'nccl' and res['world'] == 1
    assert res['all_reduce'] == [0., 1., 2., 3.] and res['broadcast'] == 1. and res['all_gather'] == [[0, 1, 2, 3, 4]]
    assert res['objects'] == [{'iou': 0.5}, True]
    assert res['average_gradients_ok']
    assert res['device'] == 'cuda:0' and res['iterations'] == 4 and res['best'] is not None
    assert (tmp_path/'torchrun'/'last.pt').is_file() and (tmp_path/'torchrun'/'best.pt').is_file()


def test_compiled_training_on_gpu(tmp_path):
    "compile on (bf16, channels-last): no fallback to eager, finite losses, close to the same run uncompiled."
    torch.manual_seed(0)
    eager = Trainer(get_config('paper', **SMALL, out_dir=str(tmp_path), name='eager'))
    compiled = Trainer(get_config('paper', **SMALL, compile=True, out_dir=str(tmp_path), name='compiled'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        got = _steps(compiled, 4)
    assert not [w for w in caught if 'torch.compile failed' in str(w.message)], [str(w.message)[:300] for w in caught]
    ref = _steps(eager, 4)
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in got)
    # bf16 with fused kernels against bf16 eager: the first iteration's losses agree closely (later ones drift apart)
    for k in ('loss_g', 'loss_d'): assert abs(got[0][k] - ref[0][k]) <= 0.05 * max(1., abs(ref[0][k])), (k, got[0][k], ref[0][k])


def test_compiled_segment_on_gpu_matches_eager(models):
    gpu, _, images = models
    with _full_fp32():
        ref = segment(gpu, images[:11], batch_size=8, amp='off')
        got = segment(gpu, images[:11], batch_size=8, amp='off', compile=True)  # the last batch padded to 8
    assert (got - ref).abs().max() <= 1e-3
