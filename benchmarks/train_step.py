"""Seconds per ReDO training iteration (one generator + one discriminator update) and masks per second at
inference, the package's fast settings (`TrainConfig.fast=True`) against its plain baseline (`fast=False`:
fp32, eager, contiguous, for-loop Adam, PyTorch's instance norm and upsample-then-convolve), measured side by
side in ONE process. On a CPU `fast` is timed in fp32 (`amp='off'`) and a third configuration, `fast_bf16`
(`amp='bf16'`: bf16 autocast, what `amp='auto'` picks on CPUs where it measures faster), is timed with them; on a GPU
`fast` uses `amp='auto'` (bf16 or fp16). `--compile` adds a fourth, `compiled` (fast, `amp='auto'`, torch.compile).

Every case also reports its arithmetic (GFLOP per call, counted by torch.utils.flop_counter on the plain
configuration) and the GFLOP/s each configuration reaches, next to what this machine's convolutions reach at
best (`peak`: a 3x3, 64-channel convolution forward, fp32 and bf16) — the floor no implementation of these networks
gets under. The `segment_cli` case times the `redo_segment` command itself, in a fresh process per run, on a
folder of JPEG photos (decoding, resizing and PNG writing included; with `--compile`, its compilation too).

The trainers are timed in interleaved rounds (A B C, then C B A, ...), so a load spike on a shared machine
hits all of them; the reported speed-up is the median of the per-round ratios. Peak memory is measured in a short
child process per configuration (peak RSS on the CPU), or on a GPU with `torch.cuda.max_memory_allocated` over an
iteration, less the other configurations' tensors that share the GPU (what a process holding that trainer alone
would peak at). On a GPU `plain` runs with PyTorch's default float32 settings (TF32 convolutions, full-fp32 matrix
products, no cuDNN autotuning), set again before each of its calls since the Trainer sets these process-wide.

    python benchmarks/train_step.py                       # every case, all cores, JSON in benchmarks/results/
    python benchmarks/train_step.py --cases cpu64 infer --threads 1 --rounds 7
    python benchmarks/train_step.py --device cuda --cases paper25 --compile
    python benchmarks/train_step.py --cases infer segment_cli --compile
    python benchmarks/train_step.py --cases cpu64 --set lambda_centre=1 --out benchmarks/results/train_step_centre.json

`--set KEY=VALUE` (any TrainConfig field, repeatable) adds a configuration `with_set`: the default one (`fast_bf16`
on a CPU where bf16 measures faster, else `fast`) with those fields, timed in the same rounds; its `vs_default` is the median per-round ratio
of the default configuration's time to its own (below 1: the option costs time).
"""
from __future__ import annotations
import argparse, copy, json, os, platform, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from redo_nb.cli import parse_setting
from redo_nb.engine import cpu_bf16_pays
from redo_nb.layers import use_fast_layers
from redo_nb.config import get_config
from redo_nb.inference import segment
from redo_nb.train import Trainer

ROOT = Path(__file__).resolve().parent
# name: (preset, overrides); every case trains on the built-in synthetic data (64 images are enough)
CASES = {
    'paper4': ('paper', dict(batch_size=4)),            # 128 px, the paper's networks, batch 4 (CPU)
    'paper25': ('paper', dict(batch_size=25)),          # the paper's batch (GPU; one or two rounds on a CPU)
    'cpu': ('cpu', dict()),                             # the cpu preset as it is (32 px, batch 16)
    'cpu64': ('cpu', dict(img_size=64, net_size=64, batch_size=32)),  # the cpu preset's networks at 64 px, batch 32
    'tiny': ('paper', dict(img_size=32, batch_size=4, ch_f=8, ch_g=8, ch_d=8)),  # the paper's networks shrunk (gpu_check.py --dry)
}
SET = 'with_set'  # the default configuration with the fields given by --set
INFER = 'infer'  # F only, masks per second on a batch of 128 px images (what redo_segment runs)
CLI = 'segment_cli'  # the redo_segment command on a folder of photos, end to end


# configuration name: TrainConfig fields
CONFIGS = {'plain': dict(fast=False), 'fast': dict(fast=True), 'fast_bf16': dict(fast=True, amp='bf16'),
           'compiled': dict(fast=True, compile=True)}


def configs(device: str, compile_: bool = False, with_set: bool = False) -> list:
    "The configurations to compare: fast_bf16 only on a CPU (on a GPU `fast` already uses bf16 or fp16), compiled with `--compile`, with_set with `--set`."
    return (['plain', 'fast'] + (['fast_bf16'] if device == 'cpu' else []) + (['compiled'] if compile_ else [])
            + ([SET] if with_set else []))


def default_config(device: str) -> str:
    "What a Trainer runs with its default settings: on a CPU, bf16 autocast where it measures faster (amp='auto'), else fp32 `fast`; `fast` on a GPU."
    return 'fast_bf16' if device == 'cpu' and cpu_bf16_pays(torch.get_num_threads()) else 'fast'


def make_trainer(case: str, config: str, device: str, out_dir: str, fields_set: dict | None = None) -> Trainer:
    "A Trainer of `case` in configuration `config`; for `with_set`, the default configuration with `fields_set`."
    preset, over = CASES[case]
    base = default_config(device) if config == SET else config
    fields = {**CONFIGS[base], **({'amp': 'off'} if base == 'fast' and device == 'cpu' else {}),
              **(fields_set if config == SET else {})}
    cfg = get_config(preset, **over, **fields, device=device, val_split=None,
                     out_dir=out_dir, name=f'{case}-{config}', progress=False, data_kwargs={'n_images': 64})
    return Trainer(cfg)


def gflop(fn) -> float:
    "GFLOP of one call of `fn` (convolutions and matrix products, forward and backward, as torch.utils.flop_counter counts them)."
    with FlopCounterMode(display=False) as counter: fn()
    return counter.get_total_flops() / 1e9


def conv_peak(device: str) -> dict:
    "GFLOP/s of a 3x3 conv, 64 -> 64 channels, batch 32 at 32x32 px, channels-last, forward: about the best these networks' convolutions reach here."
    dev = torch.device(device)
    out = {}
    for name, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16 if device == 'cpu' else torch.float16)):
        x = torch.randn(32, 64, 32, 32, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(dev, dtype).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(3): conv(x)
            _sync(dev); t0 = time.perf_counter()
            for _ in range(10): conv(x)
            _sync(dev); dt = (time.perf_counter() - t0) / 10
        out[f'{name}_gflop_per_s'] = 2 * 32 * 64 * 64 * 9 * 32 * 32 / dt / 1e9
    return out


def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def iteration(t: Trainer) -> float:
    "Wall seconds of one training iteration of `t` (one G step + one D step), the device drained."
    _sync(t.device)
    t0 = time.perf_counter()
    logs = {**t.generator_step(), **t.discriminator_step()}
    _sync(t.device)
    dt = time.perf_counter() - t0
    if not all(torch.isfinite(v).all() for v in logs.values()): raise FloatingPointError(f'non-finite loss: {logs}')
    return dt


def interleaved(fns: dict, rounds: int, warmup: int) -> dict:
    "Call each function of `fns` `warmup` times, then `rounds` times in alternating order; their durations."
    for f in fns.values():
        for _ in range(warmup): f()
    names, times = list(fns), {k: [] for k in fns}
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]): times[k].append(fns[k]())
    return times


def summarise(times: dict, per_call: int, unit: str, gflop_per_call: float) -> dict:
    "Median seconds, items per second, GFLOP/s and the speed-up over 'plain' (median of the per-round ratios) of each configuration."
    return {k: dict(median_s=statistics.median(v), min_s=min(v), times_s=[round(x, 4) for x in v],
                    **{unit: per_call / statistics.median(v)}, gflop_per_s=gflop_per_call / statistics.median(v),
                    speedup=statistics.median(a / b for a, b in zip(times['plain'], v))) for k, v in times.items()}


def train_case(case, args) -> dict:
    dev = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ts = {k: make_trainer(case, k, args.device, tmp, args.fields_set)
              for k in configs(args.device, args.compile, bool(args.fields_set))}
        B = ts['plain'].cfg.batch_size
        g = gflop(lambda: iteration(ts['plain']))
        rounds = args.rounds if case != 'paper25' or dev.type == 'cuda' else min(args.rounds, 2)
        warmup = args.warmup + (2 if args.compile else 0)  # compilation happens in the first calls
        if dev.type == 'cuda':
            peaks = {}
            def timed(k):
                def f():
                    _cuda_precision(plain=k == 'plain')
                    # the other trainers' tensors sit on the same GPU: count this trainer's own tensors and what its
                    # iteration allocates on top, i.e. the peak of a process holding this trainer alone
                    base, own = torch.cuda.memory_allocated(dev), _resident_bytes(ts[k])
                    torch.cuda.reset_peak_memory_stats(dev); dt = iteration(ts[k])
                    peaks[k] = max(peaks.get(k, 0), torch.cuda.max_memory_allocated(dev) - base + own); return dt
                return f
            res = summarise(interleaved({k: timed(k) for k in ts}, rounds, warmup), B, 'images_per_s', g)
            for k in ts: res[k]['peak_mem_mb'] = peaks[k] / 2 ** 20
        else:
            res = summarise(interleaved({k: (lambda t=t: iteration(t)) for k, t in ts.items()}, rounds, warmup), B, 'images_per_s', g)
            if args.memory:
                for k in ts:
                    if k != 'compiled': res[k].update(memory_probe(case, k, args))  # a child would compile again
        if SET in res:
            base = res[default_config(args.device)]['times_s']
            res[SET].update(fields=args.fields_set, vs_default=statistics.median(a / b for a, b in zip(base, res[SET]['times_s'])))
        cfg = ts['plain'].cfg
    return dict(case=case, kind='train', preset=CASES[case][0], img_size=cfg.img_size, batch_size=B,
                rounds=rounds, warmup=warmup, gflop_per_call=g, **res)


def _cuda_precision(plain: bool):
    "PyTorch's default float32 settings for `plain` (TF32 convolutions but full-fp32 matrix products, cuDNN heuristics), else what the Trainer sets for `fast` (TF32 everywhere, cudnn.benchmark): the Trainer sets these process-wide, so they are set again before each timed call."
    torch.backends.cuda.matmul.allow_tf32 = not plain
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not plain


def _resident_bytes(t: Trainer) -> int:
    "Bytes of the CUDA tensors trainer `t` keeps between iterations: weights, buffers, gradients, optimiser states and its images."
    params = list(t.model.parameters())
    tensors = [*params, *t.model.buffers(), *(p.grad for p in params if p.grad is not None), t.images]
    tensors += [v for o in t.opts.values() for st in o.state.values() for v in st.values() if torch.is_tensor(v)]
    seen, total = set(), 0
    for x in tensors:
        if x.is_cuda and x.untyped_storage().data_ptr() not in seen:
            seen.add(x.untyped_storage().data_ptr()); total += x.untyped_storage().nbytes()
    return total


def _peak_rss_mb() -> float:
    "This process's peak resident memory (VmHWM; unlike getrusage's ru_maxrss it is not inherited from the parent across exec)."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most systems


def memory_probe(case, config, args) -> dict:
    "Peak RSS (MiB) of a child process that builds `case` and runs two iterations, and its peak before building (imports)."
    code = (f"import sys, tempfile, torch; sys.path.insert(0, {str(ROOT)!r}); torch.set_num_threads({args.threads})\n"
            f"from train_step import make_trainer, iteration, _peak_rss_mb\n"
            f"before = _peak_rss_mb()\n"
            f"with tempfile.TemporaryDirectory() as d:\n t = make_trainer({case!r}, {config!r}, 'cpu', d, {args.fields_set!r})\n"
            f" for _ in range(2): iteration(t)\n"
            f"print(before, _peak_rss_mb())")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if r.returncode: raise RuntimeError(r.stderr[-2000:])
    before, peak = (float(x) for x in r.stdout.split()[-2:])
    return dict(peak_mem_mb=peak, mem_after_import_mb=before)


def infer_case(args) -> dict:
    "Masks per second of F on a batch of 128 px uint8 images: `segment` (fast; fast_bf16 on a CPU; compiled with `--compile`) against F with plain layers under no_grad in fp32 (plain)."
    with tempfile.TemporaryDirectory() as tmp:
        model = make_trainer('paper4', 'fast', args.device, tmp).model.eval()
    dev, B = next(model.parameters()).device, args.infer_batch
    plain_F = use_fast_layers(copy.deepcopy(model.F), False)
    images = torch.randint(0, 256, (B, 3, 128, 128), dtype=torch.uint8)
    def plain():
        with torch.no_grad(): return plain_F(images.to(dev).float() / 127.5 - 1).cpu()
    variants = dict(plain=plain, fast=lambda: segment(model, images, batch_size=B, amp='auto' if dev.type == 'cuda' else 'off'),
                    fast_bf16=lambda: segment(model, images, batch_size=B, amp='bf16'),
                    compiled=lambda: segment(model, images, batch_size=B, compile=True))
    variants = {k: variants[k] for k in configs(args.device, args.compile)}
    def timed(f):
        def g():
            _sync(dev); t0 = time.perf_counter(); f(); return time.perf_counter() - t0
        return g
    first_call_s = timed(variants['compiled'])() if args.compile else None  # compilation included
    g = gflop(plain)
    res = summarise(interleaved({k: timed(f) for k, f in variants.items()}, args.rounds, args.warmup), B, 'masks_per_s', g)
    ref = plain()
    for k, f in variants.items(): res[k]['max_abs_mask_diff'] = (f() - ref).abs().max().item()
    if first_call_s: res['compiled']['first_call_s'] = first_call_s
    return dict(case=INFER, kind='inference', img_size=128, batch_size=B, rounds=args.rounds, gflop_per_call=g, **res)


def write_photos(folder: Path, count: int, size=(500, 375), seed: int = 0):
    "`count` JPEG photos of `size` (Oxford-17's typical size): smooth random colour fields with a bright disc."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[1], :size[0]]
    for k in range(count):
        low = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)).copy()
        cx, cy, r = rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1], rng.uniform(0.15, 0.3) * size[1]
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2] = rng.integers(150, 256, 3)
        Image.fromarray(img).save(folder/f'{k:05d}.jpg', quality=90)


def cli_case(args) -> dict:
    "Wall seconds and masks per second of `redo_segment` (a fresh process per run) on a folder of JPEG photos at 128 px: default flags, and `--compile` with `--compile`."
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = make_trainer('paper4', 'fast', args.device, str(tmp))
        t.save_checkpoint('model.pt')
        ckpt = next(tmp.rglob('model.pt'))
        (tmp/'photos').mkdir(); write_photos(tmp/'photos', args.cli_images)
        flags = {'default': [], **({'compiled': ['--compile']} if args.compile else {})}
        res = {}
        for name, extra in flags.items():
            times = []
            for r in range(2):
                out = tmp/f'masks-{name}-{r}'
                code = (f"import torch; torch.set_num_threads({args.threads}); from redo_nb.cli import segment_cli; "
                        f"segment_cli({[str(ckpt), str(tmp/'photos'), str(out), '--device', args.device] + extra!r})")
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if p.returncode: raise RuntimeError(p.stderr[-2000:])
            res[name] = dict(median_s=statistics.median(times), times_s=[round(x, 2) for x in times],
                             masks_per_s=args.cli_images / statistics.median(times))
    return dict(case=CLI, kind='command', img_size=128, images=args.cli_images, **res)


def profile_case(case, args, top=15) -> str:
    "torch.profiler table (self CPU time) of two iterations of `case` with the default settings (fast; bf16 on a CPU)."
    from torch.profiler import profile, ProfilerActivity
    with tempfile.TemporaryDirectory() as tmp:
        t = make_trainer(case, default_config(args.device), args.device, tmp)
        iteration(t)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if t.device.type == 'cuda' else [])
        with profile(activities=acts) as prof:
            for _ in range(2): iteration(t)
    key = 'self_cuda_time_total' if t.device.type == 'cuda' else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=top)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--cases', nargs='+', default=['paper4', 'cpu', 'cpu64', INFER, CLI], choices=[*CASES, INFER, CLI])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=os.cpu_count(), help='torch.set_num_threads (default: all cores)')
    p.add_argument('--rounds', type=int, default=5, help='timed iterations per configuration (median)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--infer-batch', type=int, default=64)
    p.add_argument('--cli-images', type=int, default=1000, help='photos in the segment_cli folder')
    p.add_argument('--compile', action='store_true', help='also time a compiled configuration (torch.compile)')
    p.add_argument('--no-memory', dest='memory', action='store_false', help='skip the peak-RSS child processes (CPU)')
    p.add_argument('--profile', default=None, choices=list(CASES), help='also print a torch.profiler table of this case')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='also time the default configuration with this TrainConfig field (repeatable): with_set')
    p.add_argument('--out', default=str(ROOT/'results'/'train_step.json'))
    args = p.parse_args(argv)
    args.fields_set = dict(parse_setting(s) for s in args.set)
    torch.set_num_threads(args.threads)
    machine = dict(device=args.device, cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                   threads=args.threads, torch=torch.__version__,
                   gpu=torch.cuda.get_device_name() if args.device.startswith('cuda') else None)
    machine['conv_peak'] = conv_peak(args.device)
    print('conv peak: ' + ', '.join(f'{k} {v:.0f}' for k, v in machine['conv_peak'].items()), flush=True)
    results, load = [], [os.getloadavg()]
    for case in args.cases:
        r = infer_case(args) if case == INFER else cli_case(args) if case == CLI else train_case(case, args)
        load.append(os.getloadavg()); r['loadavg_after'] = load[-1]
        results.append(r)
        print(row(r), flush=True)
    out = dict(machine=machine, loadavg_start=load[0], results=results,
               command='python benchmarks/train_step.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
               date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    if args.profile:
        out['profile'] = profile_case(args.profile, args); print(out['profile'])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f'wrote {args.out} (load average {load[0]} at start, {load[-1]} at the end)')


def row(r: dict) -> str:
    "One line of the table: seconds per call, speed-up over plain, GFLOP/s and peak memory of each configuration."
    if r['kind'] == 'command':
        return ' | '.join([f"{r['case']:11} {r['img_size']:4} {r['images']:5} photos"] +
                          [f"{k}: {c['median_s']:.1f}s {c['masks_per_s']:.1f} masks/s" for k, c in r.items() if isinstance(c, dict)])
    rate = 'masks_per_s' if r['kind'] == 'inference' else 'images_per_s'
    cells = [f"{r['case']:8} {r['img_size']:4} {r['batch_size']:5} {r['gflop_per_call']:7.1f} GFLOP"]
    for k in [*CONFIGS, SET]:
        if k in r:
            c = r[k]
            mem = f" {c['peak_mem_mb']:6.0f}MiB" if 'peak_mem_mb' in c else ''
            first = f" (first call {c['first_call_s']:.0f}s)" if 'first_call_s' in c else ''
            rel = f" ({c['vs_default']:.2f} of default's speed)" if 'vs_default' in c else ''
            cells.append(f"{k}: {c['median_s']:.3f}s x{c['speedup']:.2f}{rel} {c[rate]:.1f}/s {c['gflop_per_s']:.0f} GFLOP/s{mem}{first}")
    return ' | '.join(cells)


if __name__ == '__main__':
    main()
