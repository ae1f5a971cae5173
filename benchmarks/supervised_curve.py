"""Paper Figure 4 on Oxford-17 flowers: IoU of a supervised mask network F against the number k of labelled images.

The 846 labelled photos are split once (seed 0) into 400 test images and a pool of 446 training images; for each k
a fresh `MaskNet` is trained on the first k images of the pool for the same number of steps and scored like ReDO.
Writes benchmarks/results/supervised_curve.json and .png and prints a table. The defaults need about 8 minutes
of one CPU core (17 wall minutes on the 2-core development machine shared with other jobs).

    python benchmarks/supervised_curve.py [--redo-iou 0.62] [--iters 250] [--device cuda] [--replot]

The horizontal "unsupervised ReDO" line is `--redo-iou` when given, else the best per-image IoU in
benchmarks/results/learns_oxford17.json (written by `python benchmarks/learns.py oxford17`), else it is left out.
`--replot` refreshes that line and the figure of a saved curve without training again.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from redo_nb.photos import oxford17_flowers  # noqa: E402
from redo_nb.supervised import matching_k, plot_supervised_curve, supervised_curve  # noqa: E402

RESULTS = REPO / 'benchmarks' / 'results'
OUT_NAME = 'supervised_curve'


def find_redo_iou(results_dir: Path = RESULTS):
    "(best per-image IoU of unsupervised ReDO on Oxford-17, where it came from) from `learns.py oxford17`'s result, or (None, why not)."
    path = results_dir / 'learns_oxford17.json'
    if not path.is_file(): return None, f'no {path.name} yet (python benchmarks/learns.py oxford17 writes it)'
    run = json.loads(path.read_text())
    best = run['best']
    return best['model_image'], (f"{path.name}: best per-image IoU of its training curve "
                                 f"({best['minutes']:.1f} of {run['summary']['minutes']:.1f} min, "
                                 f"{run['config']['img_size']} px)")


def save(record: dict, out: Path):
    "Write record as supervised_curve.json and its figure as supervised_curve.png in `out`."
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{OUT_NAME}.json').write_text(json.dumps(record, indent=1) + '\n')
    fig = plot_supervised_curve(record['results'], record['redo_iou'],
                                title=f"Oxford-17 flowers, {record['size']} px: supervised F vs labelled images")
    fig.savefig(out / f'{OUT_NAME}.png', dpi=120, bbox_inches='tight')
    print(f"wrote {out / OUT_NAME}.json and .png")


def redo_line(record: dict, redo_iou=None, results_dir: Path = RESULTS) -> dict:
    "Set the unsupervised ReDO IoU of `record` (given, else looked up in `results_dir`) and the k at which F matches it."
    iou, source = (redo_iou, 'command line') if redo_iou is not None else find_redo_iou(results_dir)
    k = matching_k(record['results'], iou) if iou is not None else None
    if iou is None: print(f"unsupervised ReDO IoU: unknown ({source}); pass --redo-iou")
    else: print(f"unsupervised ReDO IoU {iou:.3f} ({source}): the supervised F matches it from k = {k}")
    return {**record, 'redo_iou': iou, 'redo_source': source, 'matching_k': k}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=str(REPO.parent / 'shared' / 'data' / 'oxford17_flowers'),
                   help='Oxford-17 folder with images_256/ and labels_256/')
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--ks', type=int, nargs='+', default=[1, 2, 5, 10, 20, 50, 100, 200, 400])
    p.add_argument('--test-size', type=int, default=400)
    p.add_argument('--iters', type=int, default=250, help='Adam steps for every k')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--device', default='cpu')
    p.add_argument('--redo-iou', type=float, default=None, help='unsupervised ReDO IoU to draw (default: look it up)')
    p.add_argument('--out', default=str(RESULTS))
    p.add_argument('--replot', action='store_true',
                   help='no training: refresh the ReDO line of the saved JSON and redraw the PNG')
    a = p.parse_args(argv)
    if a.replot:
        saved = Path(a.out) / f'{OUT_NAME}.json'
        if not saved.is_file(): sys.exit(f"--replot: no saved curve at {saved}; run without --replot first")
        return save(redo_line(json.loads(saved.read_text()), a.redo_iou, Path(a.out)), Path(a.out))
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    if not (root / 'labels_256').is_dir():
        sys.exit(f"Oxford-17 not found at {root} (expected {root}/images_256 and {root}/labels_256); pass --root")
    data = oxford17_flowers(root, size=a.size, labelled_only=True)
    print(f"{data}; test {a.test_size}, train pool {len(data) - a.test_size}; {a.iters} steps x {a.batch_size} per k",
          flush=True)
    t0 = time.time()
    rows = supervised_curve(data, ks=a.ks, test_size=a.test_size, seed=a.seed, iters=a.iters,
                            batch_size=a.batch_size, lr=a.lr, device=a.device)
    minutes = (time.time() - t0) / 60
    print(f"\n{'k':>5}{'Acc':>8}{'IoU':>8}{'set Acc':>9}{'set IoU':>9}{'s':>6}")
    for r in rows: print(f"{r['k']:5d}{r['acc']:8.3f}{r['iou']:8.3f}{r['acc_dataset']:9.3f}{r['iou_dataset']:9.3f}{r['seconds']:6.0f}")
    print(f"best centred disc: Acc {rows[0]['disc_acc']:.3f} IoU {rows[0]['disc_iou']:.3f}; total {minutes:.1f} min")
    record = dict(dataset='oxford17', size=a.size, n_labelled=len(data), config={k: v for k, v in vars(a).items()
                  if k not in ('root', 'out', 'replot', 'redo_iou')}, minutes=round(minutes, 1), device=a.device,
                  machine=f"{platform.machine()} {platform.processor() or ''}".strip(), torch=torch.__version__,
                  results=rows)
    save(redo_line(record, a.redo_iou, Path(a.out)), Path(a.out))


if __name__ == '__main__':
    main()
