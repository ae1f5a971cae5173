"""The paper on a GPU, in one command: environment, CUDA tests, training-step benchmarks and a 6-minute learning run.

The device call (on a lent NVIDIA H200; `python tools/prepare_gpu_carry.py` first writes `.gpu_carry/`, the
Oxford-17 photos at 128 px and the wheels that machine lacks, and prints this same call):

    run(carry=['.gpu_carry'], timeout_s=600, command='export PYTHONUNBUFFERED=1 MPLBACKEND=Agg; nvidia-smi; if ls .gpu_carry/wheels/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/wheels/*.whl || echo WHEEL INSTALL FAILED; export PYTHONPATH=/tmp/site; fi; python3 benchmarks/gpu_check.py /tmp/gpu_check --data .gpu_carry/oxford17_flowers --budget 560 2>&1 | tee /tmp/gpu_check_console.txt; cd /tmp && tar czf $OUT/gpu_check.tgz --exclude=*.pt --exclude=samples_*.png gpu_check gpu_check_console.txt; cp gpu_check/summary.json gpu_check/learn.png gpu_check/learn_samples_last.png gpu_check/env.json $OUT/ 2>/dev/null; ls -l $OUT')

It ends within its `--budget` (560 s; a stage past its time box is killed) plus the install and the packing (about
15 s), under the call's 600 s: with the machine's start (1-2 minutes) about 11.5 of the session's 15 device minutes.
What comes back: summary.json, learn.png, learn_samples_last.png (inputs, masks and redrawn images at the last
evaluation), env.json and gpu_check.tgz (OUT_DIR but its checkpoints and the other sample grids). A rerun
fits only at once, on the still-warm machine (30 s), and only of the stages that failed: the same command with
`--stages NAME ... --budget 150` into /tmp/gpu_check_rerun, `timeout_s=200` (`rerun_command`; printed by
tools/prepare_gpu_carry.py). Then `give_back`.

    python benchmarks/gpu_check.py OUT_DIR [--data DIR] [--minutes 6] [--budget 560] [--stages ...]
    python benchmarks/gpu_check.py OUT_DIR --dry      # the same stages on the CPU at tiny sizes (tests/test_gpu_check.py)

Everything lands in OUT_DIR, one stage after another, each in its own process, time-boxed, its output in
`<stage>.log` and, when it fails or runs out of time, its traceback in `<stage>.traceback.txt`; a failed stage never
stops the later ones. `summary.json` (rewritten after every stage) gives each stage's status, duration and headline
figures. The stages:

- `env`: `env.json`: GPU, driver, torch, CUDA, cuDNN, bf16 support, Python, the packages redo_nb needs.
- `bench`: `benchmarks/train_step.py --device cuda --cases paper25 cpu infer` -> `train_step.json`: seconds per
  iteration, images per second and peak memory of the paper preset at batch 25 and of the cpu preset, plain fp32
  against fast (bf16 autocast, channels-last, fused Adam, fast layers), and masks per second of `segment`.
- `bench_compiled`: the same on `paper25` with `--compile` -> `train_step_compiled.json` (its own process: a
  compilation that fails or hangs costs the plain and fast figures nothing).
- `learn`: the `paper` preset on Oxford-17 at 128 px for `--minutes` (6, or what the budget leaves after the
  benchmarks: about 5.5), validation IoU (all 169 validation images) every 250 iterations -> `learn/<run>/metrics.jsonl`,
  `learn_fit.json`. `eval_refine` is off: refining 2 x 169 masks on the host's CPU at every evaluation would take
  more of the 6 minutes than the training does; the paper's figure is F's own masks.
- `tests`: `pytest tests/test_cuda.py` (bf16 and fp16 training, channels-last, compile on and off, checkpoints from
  GPU to CPU, `segment` on GPU against CPU, `torchrun` with NCCL) -> `tests.log`, `tests_junit.xml`. It runs
  beside `learn` (the learning run is judged per iteration, not per second; the benchmarks run alone).
- `curve`: `learn.json` and `learn.png`: the learning run's validation IoU per iteration drawn beside the published
  per-iteration curve of the authors' code on Flowers-102 (AUTHORS_CURVE).

`--dry` runs the same stages on the CPU (CUDA hidden) at tiny sizes on a miniature Oxford-17 tree (written into
OUT_DIR unless `--data` names one), in well under 2 minutes: the CUDA tests are collected and skip, the benchmarks
time the `tiny` and `cpu` cases on the CPU, and `bench_compiled` is skipped (a cold torch.compile takes about two
minutes on a CPU; tests/test_compile.py covers compilation there). summary.json says so under `dry_run_skips`.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, signal, subprocess, sys, time, traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STAGES = ('env', 'bench', 'bench_compiled', 'learn', 'tests', 'curve')
RUN_CARRY = ['.gpu_carry']
RUN_TIMEOUT_S = 600
GPU_BUDGET_S = 560  # the check's own limit on the GPU: with the install and the packing (~15 s) under RUN_TIMEOUT_S
RERUN_TIMEOUT_S = 200  # a rerun of failed stages (rerun_command, --budget 150) on the still-warm machine
RUN_COMMAND = (
    "export PYTHONUNBUFFERED=1 MPLBACKEND=Agg; nvidia-smi; "
    "if ls .gpu_carry/wheels/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile "
    "--no-cache-dir --upgrade --target /tmp/site .gpu_carry/wheels/*.whl || echo WHEEL INSTALL FAILED; "
    "export PYTHONPATH=/tmp/site; fi; "
    f"python3 benchmarks/gpu_check.py /tmp/gpu_check --data .gpu_carry/oxford17_flowers --budget {GPU_BUDGET_S} 2>&1 "
    "| tee /tmp/gpu_check_console.txt; "
    "cd /tmp && tar czf $OUT/gpu_check.tgz --exclude=*.pt --exclude=samples_*.png gpu_check gpu_check_console.txt; "
    "cp gpu_check/summary.json gpu_check/learn.png gpu_check/learn_samples_last.png gpu_check/env.json $OUT/ 2>/dev/null; "
    "ls -l $OUT")


def rerun_command(stages, budget_s: int = 150) -> str:
    "RUN_COMMAND for a rerun of `stages` only (into /tmp/gpu_check_rerun), to fit in what is left of the session."
    return (RUN_COMMAND.replace('/tmp/gpu_check --data', f"/tmp/gpu_check_rerun --stages {' '.join(stages)} --data")
            .replace(f'--budget {GPU_BUDGET_S}', f'--budget {budget_s}').replace('gpu_check gpu_check_console', 'gpu_check_rerun gpu_check_console')
            .replace('gpu_check.tgz', 'gpu_check_rerun.tgz')
            .replace('gpu_check/summary.json gpu_check/learn.png gpu_check/learn_samples_last.png gpu_check/env.json',
                     'gpu_check_rerun/summary.json gpu_check_rerun/learn.png gpu_check_rerun/learn_samples_last.png'))

# the authors' released code on Flowers-102: validation IoU per iteration, from the EPFL reproducibility study
AUTHORS_CURVE = {'points': [(500, 0.505), (1000, 0.606), (1500, 0.631), (2000, 0.660)], 'best': (44_000, 0.754),
                 'source': "authors' released code on Flowers-102 (EPFL reproducibility study of ReDO)"}

# stage -> seconds it may take at most (the learning run's own box follows from --minutes)
BOXES = {'gpu': dict(env=90, bench=180, bench_compiled=240, tests=330, curve=60),
         'dry': dict(env=60, bench=90, bench_compiled=60, tests=90, curve=60)}
LEARN_OVERHEAD_S = {'gpu': 45, 'dry': 30}  # imports, decoding, building; the final evaluation and checkpoint
RESERVE_S = 25  # kept for the curve and the summary at the end of the budget
DRY_SKIPS = {
    'tests': 'every test of tests/test_cuda.py needs CUDA: pytest collected them and they skipped',
    'bench': "timed on the CPU (--device cpu) on the 'tiny' case (the paper's networks at 32 px, widths 8) and the "
             "cpu case, 1 round; the GPU run times paper25 and cpu on CUDA",
    'bench_compiled': 'not run: a cold torch.compile of one trainer takes about 2 minutes on this CPU '
                      '(tests/test_compile.py covers compilation on a CPU); the GPU run compiles paper25 on CUDA',
    'learn': "the paper preset shrunk (32 px, widths 8, batch 4) for a few iterations on a miniature Oxford-17; the "
             "GPU run trains the paper preset itself at 128 px on Oxford-17 for about 6 minutes",
}


# ---------------------------------------------------------------- stages run in a child process (`--stage NAME`)

def stage_env(args) -> dict:
    "Write env.json: GPU, driver, torch, CUDA, cuDNN, bf16, Python, package versions, the source revision."
    import importlib.metadata as md
    import torch
    env = dict(python=sys.version.split()[0], python_executable=sys.executable, platform=platform.platform(),
               cpu_count=os.cpu_count(), torch=torch.__version__, cuda_runtime=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               cuda_available=torch.cuda.is_available(), dry=args.dry)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_count=torch.cuda.device_count(), compute_capability=f'{p.major}.{p.minor}',
                   gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), multiprocessors=p.multi_processor_count,
                   bf16_supported=torch.cuda.is_bf16_supported(), nccl=_nccl_version())
    else:
        env.update(gpu=None, bf16_supported=None)
    smi = shutil.which('nvidia-smi')
    if smi:
        q = subprocess.run([smi, '--query-gpu=name,driver_version,memory.total,clocks.max.sm', '--format=csv,noheader'],
                           capture_output=True, text=True, timeout=30)
        env['nvidia_smi'] = q.stdout.strip() or q.stderr.strip()
        env['driver'] = q.stdout.split(',')[1].strip() if q.returncode == 0 and ',' in q.stdout else None
    else: env['driver'] = None
    pkgs = {}
    for name in ('numpy', 'torchvision', 'triton', 'pillow', 'matplotlib', 'scipy', 'tqdm', 'fastcore', 'pytest'):
        try: pkgs[name] = md.version(name)
        except md.PackageNotFoundError: pkgs[name] = None
    env['packages'] = pkgs
    import redo_nb
    env['redo_nb'] = dict(path=str(Path(redo_nb.__file__).parent), version=getattr(redo_nb, '__version__', None),
                          source=_source_revision())
    (args.out/'env.json').write_text(json.dumps(env, indent=1))
    keys = ('gpu', 'driver', 'torch', 'cuda_runtime', 'cudnn', 'bf16_supported', 'python')
    return {k: env.get(k) for k in keys}


def _nccl_version() -> str:
    try:
        import torch.cuda.nccl
        v = torch.cuda.nccl.version()
        return '.'.join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as e: return f'unknown ({type(e).__name__}: {e})'


def _source_revision() -> dict:
    "The git commit of the working tree (here), or what tools/prepare_gpu_carry.py recorded (on the GPU machine, no .git)."
    carried = ROOT/'.gpu_carry'/'SOURCE.json'
    if carried.is_file(): return json.loads(carried.read_text())
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return dict(commit=commit or None, modified_files=len(dirty.splitlines()))
    except (OSError, subprocess.SubprocessError): return {}


def learn_config(args):
    "The learning run's TrainConfig: the paper preset on Oxford-17 at 128 px (dry: shrunk to seconds on a CPU)."
    from redo_nb.config import get_config
    common = dict(dataset='oxford17', root=str(args.data), out_dir=str(args.out/'learn'), progress=False,
                  max_minutes=args.minutes, eval_refine=False)
    if args.dry:
        return get_config('paper', **common, name='paper-oxford17-dry', img_size=32, batch_size=4, ch_f=8, ch_g=8,
                          ch_d=8, iters=6, eval_every=2, log_every=2, ckpt_every=6, num_threads=1)
    return get_config('paper', **common, name='paper-oxford17-128px', img_size=128, eval_every=250, log_every=50)


def stage_learn(args) -> dict:
    "Train the learning run; write learn_fit.json (Trainer.fit's summary) and return its headline."
    import torch
    from redo_nb.train import Trainer
    if args.dry: torch.set_num_threads(1)
    cfg = learn_config(args)
    (args.out/'learn').mkdir(exist_ok=True)
    t0 = time.time()
    trainer = Trainer(cfg)
    build_s = time.time() - t0
    print(f'learn: {len(trainer.data)} training and {len(trainer.val_data)} validation images at {cfg.img_size} px, '
          f'{trainer.device}, amp {trainer.amp_dtype}, built in {build_s:.1f}s; training for {cfg.max_minutes:.2f} min', flush=True)
    summary = trainer.fit()
    summary.update(build_s=round(build_s, 1), train_images=len(trainer.data), val_images=len(trainer.val_data),
                   device=str(trainer.device), amp=str(trainer.amp_dtype), config=cfg.to_dict())
    (args.out/'learn_fit.json').write_text(json.dumps(summary, indent=1, default=str))
    best = summary.get('best') or {}
    return dict(iterations=summary['iterations'], minutes=summary['minutes'], stopped_by=summary['stopped_by'],
                sec_per_iter=round(summary['sec_per_iter'], 4), restarts=summary['restarts'],
                best_val_iou=best.get('iou'), best_iter=best.get('iter'), run_dir=summary['run_dir'])


def _evals(metrics: Path) -> list:
    "One row per evaluation of a metrics.jsonl (a run killed half-way still has its complete lines)."
    rows = []
    for line in metrics.read_text().splitlines():
        try: r = json.loads(line)
        except json.JSONDecodeError: continue  # a line cut off by a kill
        if 'eval' not in r: continue
        e = r['eval']
        rows.append(dict(iter=r['iter'], minutes=r.get('minutes'), restarts=r.get('restarts'),
                         iou=e['model']['image']['iou'], iou_dataset=e['model']['dataset']['iou'],
                         refined_iou=e.get('refined', {}).get('image', {}).get('iou'),
                         average_mask_iou=e.get('average_mask', {}).get('image', {}).get('iou'),
                         centred_disc_iou=e.get('centred_disc', {}).get('image', {}).get('iou')))
    return rows


def _learn_metrics(out: Path) -> Path:
    "The learning run's metrics.jsonl: the one learn_fit.json names, else the newest under out/learn."
    fit = out/'learn_fit.json'
    if fit.is_file():
        p = Path(json.loads(fit.read_text())['run_dir'])/'metrics.jsonl'
        if p.is_file(): return p
    found = sorted((out/'learn').glob('*/metrics.jsonl'), key=lambda p: p.stat().st_mtime)
    if not found: raise FileNotFoundError(f'no metrics.jsonl under {out/"learn"}: the learning run wrote nothing')
    return found[-1]


def stage_curve(args) -> dict:
    "learn.json and learn.png: the learning run's validation IoU per iteration against the authors' published curve."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metrics = _learn_metrics(args.out)
    rows = _evals(metrics)
    if not rows: raise ValueError(f'{metrics} holds no evaluation')
    last_restart = max(r['restarts'] or 0 for r in rows)
    rows = [r for r in rows if (r['restarts'] or 0) == last_restart]  # a restart starts the iterations again
    at = {r['iter']: r['iou'] for r in rows}
    comparison = [dict(iter=it, authors=a, ours=at.get(it), diff=None if at.get(it) is None else round(at[it] - a, 4))
                  for it, a in AUTHORS_CURVE['points']]
    reached = [c for c in comparison if c['ours'] is not None]
    best = max(rows, key=lambda r: r['iou'])
    out = dict(metrics=str(metrics), restarts=last_restart, evaluations=rows, authors=AUTHORS_CURVE, comparison=comparison,
               at_or_above_authors=all(c['diff'] >= 0 for c in reached) if reached else None,
               points_compared=len(reached), best=dict(iter=best['iter'], iou=best['iou']),
               last=dict(iter=rows[-1]['iter'], iou=rows[-1]['iou'], minutes=rows[-1]['minutes']))
    (args.out/'learn.json').write_text(json.dumps(out, indent=1))

    cfg = json.loads((metrics.parent/'config.json').read_text()) if (metrics.parent/'config.json').is_file() else {}
    ours = f"ours: {cfg.get('preset')} preset, {cfg.get('dataset')} {cfg.get('img_size')} px, batch {cfg.get('batch_size')} (F, per image)"
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    its = [r['iter'] for r in rows]
    ax.plot(its, [r['iou'] for r in rows], 'o-', color='C0', label=ours)
    if any(r['refined_iou'] is not None for r in rows):
        ax.plot(its, [r['refined_iou'] for r in rows], '.--', color='C0', alpha=0.6, label='ours, masks refined on edges')
    if any(r['centred_disc_iou'] is not None for r in rows):
        ax.axhline(rows[-1]['centred_disc_iou'], color='grey', lw=0.8, ls=':', label='best centred disc (prior)')
    ax.plot(*zip(*AUTHORS_CURVE['points']), 's-', color='C3', label="authors' code, Flowers-102 (EPFL study)")
    b_it, b_iou = AUTHORS_CURVE['best']
    ax.axhline(b_iou, color='C3', lw=0.8, ls='--')
    ax.text(ax.get_xlim()[1], b_iou, f"authors' best {b_iou:.3f} at {b_it:,} it. ", color='C3', ha='right', va='bottom', fontsize=8)
    ax.set(xlabel='iteration', ylabel='validation IoU', ylim=(0, 1),
           title=f"ReDO, validation IoU per iteration ({rows[-1]['iter']:,} it. in {rows[-1]['minutes'] or 0:.1f} min)")
    ax.grid(alpha=0.3); ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout(); fig.savefig(args.out/'learn.png'); plt.close(fig)
    grids = sorted(metrics.parent.glob('samples_*.png'))
    if grids: shutil.copyfile(grids[-1], args.out/'learn_samples_last.png')
    return dict(at_or_above_authors=out['at_or_above_authors'], points_compared=len(reached),
                comparison={c['iter']: [c['ours'], c['authors']] for c in comparison},
                best_iou=round(best['iou'], 4), best_iter=best['iter'], png='learn.png')


def write_mini_oxford17(root: Path, n: int = 30, size: int = 40, seed: int = 0) -> Path:
    "A miniature Oxford-17 tree in the official layout (images_256/image_XXXX.jpg, palette labels_256/image_XXXX.png; 1 = flower, 3 = background, 0 = void), the last fifth unlabelled."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    (root/'images_256').mkdir(parents=True, exist_ok=True); (root/'labels_256').mkdir(exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
    for k in range(1, n + 1):
        cx, cy, r = rng.uniform(0.35, 0.65, 2).tolist() + [rng.uniform(0.2, 0.35)]
        d2 = (xx / size - cx) ** 2 + (yy / size - cy) ** 2
        img = np.empty((size, size, 3), np.uint8)
        img[:] = rng.integers(0, 120, 3); img[d2 < r ** 2] = rng.integers(130, 256, 3)
        Image.fromarray(img).save(root/'images_256'/f'image_{k:04d}.jpg', quality=95)
        if k <= n - n // 5:
            lab = np.where(d2 < r ** 2, 1, 3).astype(np.uint8)
            lab[np.abs(np.sqrt(d2) - r) < 1.5 / size] = 0  # a void boundary, as in the real labels
            png = Image.fromarray(lab, mode='P'); png.putpalette(palette)
            png.save(root/'labels_256'/f'image_{k:04d}.png')
    return root


CHILD_STAGES = {'env': stage_env, 'learn': stage_learn, 'curve': stage_curve}


def run_child(args):
    "Body of `--stage NAME`: run the stage, write <stage>.result.json, or <stage>.traceback.txt and exit 1."
    try:
        result = CHILD_STAGES[args.stage](args)
        (args.out/f'{args.stage}.result.json').write_text(json.dumps(result, indent=1, default=str))
    except BaseException:
        (args.out/f'{args.stage}.traceback.txt').write_text(traceback.format_exc())
        traceback.print_exc()
        sys.exit(1)


# ---------------------------------------------------------------- the parent: stages, time boxes, summary

class Stage:
    "One stage's process: started at once, waited for with a deadline, killed (its whole process group) past it."
    def __init__(self, name: str, cmd: list, out: Path, timeout: float, env: dict):
        self.name, self.cmd, self.out, self.timeout = name, cmd, out, timeout
        self.log = out/f'{name}.log'
        self.t0 = time.time()
        with open(self.log, 'w') as f:
            f.write('$ ' + ' '.join(map(str, cmd)) + '\n'); f.flush()
            self.proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        print(f'[{time.strftime("%H:%M:%S")}] {name}: started (time box {timeout:.0f}s)', flush=True)

    def wait(self) -> dict:
        timed_out = False
        try: rc = self.proc.wait(timeout=max(1., self.t0 + self.timeout - time.time()))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try: os.killpg(self.proc.pid, sig)  # the stage's own process group: pytest's or torchrun's children too
                except ProcessLookupError: break
                try: self.proc.wait(timeout=grace); break
                except subprocess.TimeoutExpired: continue
            rc = self.proc.returncode
        dur = time.time() - self.t0
        tb = self.out/f'{self.name}.traceback.txt'
        if (timed_out or rc) and not tb.exists():
            tail = self.log.read_text(errors='replace')[-6000:]
            why = f'timed out after {self.timeout:.0f}s' if timed_out else f'exited with status {rc}'
            tb.write_text(f'stage {self.name} {why}; the end of {self.log.name}:\n\n{tail}')
        status = 'timeout' if timed_out else ('ok' if rc == 0 else 'failed')
        print(f'[{time.strftime("%H:%M:%S")}] {self.name}: {status} in {dur:.1f}s', flush=True)
        return dict(status=status, duration_s=round(dur, 1), returncode=rc, log=self.log.name,
                    traceback=tb.name if tb.exists() else None)


class Check:
    def __init__(self, args):
        self.args, self.out = args, args.out
        self.mode = 'dry' if args.dry else 'gpu'
        self.t_start = time.time()
        self.deadline = self.t_start + args.budget
        self.summary = dict(mode=self.mode, command=' '.join([sys.executable, *sys.argv]), out_dir=str(args.out),
                            data=str(args.data), budget_s=args.budget, started=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
                            stages={}, dry_run_skips=DRY_SKIPS if args.dry else {})
        env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg', REDO_NB_CACHE=str(args.out/'cache'),
                   PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]))
        if args.dry: env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
        self.env = env

    def left(self) -> float: return self.deadline - time.time()

    def box(self, name) -> float: return max(5., min(BOXES[self.mode][name], self.left() - RESERVE_S))

    def child(self, name, extra=()) -> list:
        a = self.args
        return [sys.executable, str(Path(__file__).resolve()), str(a.out), '--stage', name, '--data', str(a.data),
                *(['--dry'] if a.dry else []), *extra]

    def record(self, name, res: dict, headline: dict | None = None, note: str | None = None):
        res['headline'] = headline or {}
        if note: res['note'] = note
        if self.args.dry and name in DRY_SKIPS: res['dry_run'] = DRY_SKIPS[name]
        self.summary['stages'][name] = res
        self.write_summary()

    def skip(self, name, why):
        self.summary['stages'][name] = dict(status='skipped', duration_s=0., reason=why, headline={})
        print(f'{name}: skipped ({why})', flush=True)
        self.write_summary()

    def write_summary(self):
        s = self.summary
        s['duration_s'] = round(time.time() - self.t_start, 1)
        done = s['stages'].values()
        s['all_ok'] = all(v['status'] in ('ok', 'skipped') for v in done)
        s['failed'] = [k for k, v in s['stages'].items() if v['status'] not in ('ok', 'skipped')]
        tmp = self.out/'.summary.json.tmp'
        tmp.write_text(json.dumps(s, indent=1, default=str)); os.replace(tmp, self.out/'summary.json')

    # ---- the stages, as the parent sees them
    def child_result(self, name) -> dict:
        p = self.out/f'{name}.result.json'
        return json.loads(p.read_text()) if p.is_file() else {}

    def run_bench(self, name):
        a = self.args
        out_json = self.out/('train_step_compiled.json' if name == 'bench_compiled' else 'train_step.json')
        if a.dry:
            cases, extra = ['tiny', 'cpu', 'infer'], ['--device', 'cpu', '--threads', '1', '--rounds', '1', '--warmup', '1',
                                                      '--infer-batch', '4', '--no-memory']
        elif name == 'bench':
            cases, extra = ['paper25', 'cpu', 'infer'], ['--device', 'cuda', '--rounds', '5', '--warmup', '2']
        else:
            cases, extra = ['paper25'], ['--device', 'cuda', '--rounds', '5', '--warmup', '2', '--compile']
        cmd = [sys.executable, str(HERE/'train_step.py'), '--cases', *cases, *extra, '--out', str(out_json)]
        res = Stage(name, cmd, self.out, self.box(name), self.env).wait()
        headline, note = {}, None
        if out_json.is_file():
            headline = bench_headline(json.loads(out_json.read_text()))
            res['files'] = [out_json.name]
        if name == 'bench_compiled' and 'torch.compile failed' in (self.out/res['log']).read_text(errors='replace'):
            note = "torch.compile FAILED and the 'compiled' figures are eager ones: see the log"
            headline['compile_fell_back'] = True
        self.record(name, res, headline, note)

    def run_learn_and_tests(self, stages):
        a = self.args
        learn = tests = None
        if 'learn' in stages:
            can = (self.left() - LEARN_OVERHEAD_S[self.mode] - RESERVE_S) / 60  # minutes the budget leaves
            if can < 0.25 and not a.dry: self.skip('learn', f'only {self.left():.0f}s of the budget left')
            else:
                minutes = min(a.minutes, max(can, 0.25))
                box = max(minutes * 60 + LEARN_OVERHEAD_S[self.mode], self.left() - RESERVE_S)  # the last long stage
                learn = Stage('learn', self.child('learn', ['--minutes', f'{minutes:.3f}']), self.out, box, self.env)
        if 'tests' in stages:
            cmd = [sys.executable, '-m', 'pytest', str(ROOT/'tests'/'test_cuda.py'), '-v', '-rs', '-p', 'no:cacheprovider',
                   f'--junitxml={self.out/"tests_junit.xml"}']
            tests = Stage('tests', cmd, self.out, self.box('tests'), self.env)
        if tests:
            res = tests.wait()
            head = junit_headline(self.out/'tests_junit.xml')
            note = None
            if head.get('tests') and head.get('skipped') == head.get('tests'):
                note = 'every test skipped: ' + '; '.join(sorted(set(head.get('skip_reasons', []))))[:300]
            if learn: note = ((note + '. ') if note else '') + 'ran beside the learning run'
            self.record('tests', res, head, note)
        if learn:
            res = learn.wait()
            self.record('learn', res, self.child_result('learn'))

    def run(self, stages):
        a = self.args
        print(f'gpu_check ({self.mode}): {", ".join(stages)} into {a.out}, budget {a.budget:.0f}s', flush=True)
        self.write_summary()
        if 'env' in stages:
            res = Stage('env', self.child('env'), self.out, self.box('env'), self.env).wait()
            self.record('env', res, self.child_result('env'), None)
        for name in ('bench', 'bench_compiled'):
            if name not in stages: continue
            if a.dry and name == 'bench_compiled': self.skip(name, DRY_SKIPS[name])
            else: self.run_bench(name)
        self.run_learn_and_tests(stages)
        if 'curve' in stages:
            res = Stage('curve', self.child('curve'), self.out, self.box('curve'), self.env).wait()
            self.record('curve', res, self.child_result('curve'))
        self.write_summary()
        print_summary(self.summary)
        return 0 if self.summary['all_ok'] else 1


def bench_headline(d: dict) -> dict:
    "Per case and configuration: seconds per iteration, images (or masks) per second, peak memory, speed-up over plain."
    out = {'gpu': d.get('machine', {}).get('gpu'), 'device': d.get('machine', {}).get('device')}
    for r in d.get('results', []):
        cells = {}
        for k, c in r.items():
            if not isinstance(c, dict) or 'median_s' not in c: continue
            rate = c.get('images_per_s', c.get('masks_per_s'))
            cells[k] = dict(s_per_iter=round(c['median_s'], 5), per_s=round(rate, 1) if rate else None,
                            peak_mem_mb=round(c['peak_mem_mb'], 1) if 'peak_mem_mb' in c else None,
                            speedup=round(c.get('speedup', 1.), 3))
        out[r['case']] = cells
        plain = cells.get('plain', {})
        fastest = min((v['s_per_iter'], k) for k, v in cells.items() if k != 'plain') if len(cells) > 1 else None
        if r.get('kind') == 'train' and fastest:
            cells['minutes_for_30000_iters'] = round(30_000 * fastest[0] / 60, 1)
            if plain.get('peak_mem_mb') and cells[fastest[1]].get('peak_mem_mb'):
                cells['mem_ratio_fastest_to_plain'] = round(cells[fastest[1]]['peak_mem_mb'] / plain['peak_mem_mb'], 3)
    return out


def junit_headline(path: Path) -> dict:
    "Counts of a pytest junit XML file, the failing tests and the skip reasons."
    if not path.is_file(): return {}
    import xml.etree.ElementTree as ET
    root = ET.parse(path).getroot()
    suite = root if root.tag == 'testsuite' else root.find('testsuite')
    head = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
    head['passed'] = head['tests'] - head['failures'] - head['errors'] - head['skipped']
    failing, reasons = [], []
    for case in suite.iter('testcase'):
        for tag in ('failure', 'error'):
            el = case.find(tag)
            if el is not None: failing.append(f"{case.get('name')}: {(el.get('message') or '')[:200]}")
        sk = case.find('skipped')
        if sk is not None: reasons.append((sk.get('message') or '')[:200])
    head['failing'], head['skip_reasons'] = failing, reasons
    return head


def print_summary(s: dict):
    print(f"\n== gpu_check {s['mode']}: {'all stages ok' if s['all_ok'] else 'FAILED: ' + ', '.join(s['failed'])} "
          f"in {s['duration_s']:.0f}s", flush=True)
    for name, st in s['stages'].items():
        head = {k: v for k, v in st.get('headline', {}).items() if k not in ('skip_reasons', 'comparison')}
        print(f"  {name:15} {st['status']:8} {st['duration_s']:7.1f}s  {json.dumps(head, default=str)[:600]}")
        if st.get('traceback'): print(f"  {'':15} traceback: {st['traceback']}")
    if 'curve' in s['stages'] and s['stages']['curve'].get('headline', {}).get('comparison'):
        print('  IoU per iteration [ours, authors]:', s['stages']['curve']['headline']['comparison'])
    print(flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('out', type=Path, help='folder for everything the check writes')
    p.add_argument('--dry', action='store_true', help='the same stages on the CPU at tiny sizes, in under 2 minutes')
    p.add_argument('--data', type=Path, default=None,
                   help='Oxford-17 root (images_256/, labels_256/); default: .gpu_carry/oxford17_flowers, then '
                        '../shared/data/oxford17_flowers; --dry: a miniature tree written into OUT')
    p.add_argument('--minutes', type=float, default=None, help='learning-run minutes (default 6; --dry 0.5)')
    p.add_argument('--budget', type=float, default=None, help=f'seconds the whole check may take (default {GPU_BUDGET_S}; --dry 150)')
    p.add_argument('--stages', nargs='+', default=list(STAGES), choices=STAGES, help='run only these stages')
    p.add_argument('--stage', choices=list(CHILD_STAGES), help=argparse.SUPPRESS)  # one stage, in this process
    a = p.parse_args(argv)
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.minutes is None: a.minutes = 0.5 if a.dry else 6.
    if a.budget is None: a.budget = 150. if a.dry else float(GPU_BUDGET_S)
    if a.stage: return run_child(a)
    if a.data is None:
        candidates = [ROOT/'.gpu_carry'/'oxford17_flowers', ROOT.parent/'shared'/'data'/'oxford17_flowers']
        a.data = (write_mini_oxford17(a.out/'mini_oxford17') if a.dry else
                  next((c for c in candidates if (c/'images_256').is_dir()), candidates[0]))
    a.data = a.data.resolve()
    stages = [s for s in STAGES if s in a.stages]
    if 'learn' in stages and 'curve' not in stages: stages.append('curve')
    return Check(a).run(stages)


if __name__ == '__main__':
    sys.exit(main())
