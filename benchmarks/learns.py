"""Does ReDO learn on a CPU? Trains the package's `Trainer` (a preset, default `cpu`) and prints IoU against minutes
next to the model's own average mask, the best centred disc and (Oxford-17, when OpenCV is installed) GrabCut.

    python benchmarks/learns.py synthetic --minutes 10              # target: IoU >= 0.90 per-dataset in 10 min
    python benchmarks/learns.py oxford17 --minutes 45 --size 64     # target: IoU >= 0.73, both protocols, 45 min
    python benchmarks/learns.py colored_mnist --minutes 20          # target: mean digit IoU >= 0.80 in 20 min
    python benchmarks/learns.py synthetic2 --minutes 10             # two objects per image, n = 3 regions
    python benchmarks/learns.py synthetic --set lr_f=1e-4 --name trial   # any TrainConfig field

Every evaluation also scores F's masks refined on image edges (redo_nb.refine, not in the paper) and F's own average
mask refined the same way; with two regions the best centred disc refined the same way is added to the baselines.

Writes benchmarks/results/learns_<dataset>[_<name>].json and .png. Minutes are wall minutes of the training loop
(evaluations included); run it on an otherwise idle machine.
"""
import argparse, json, pathlib, sys, tempfile
import torch
from redo_nb.config import get_config
from redo_nb.datasets import get_dataset
from redo_nb.train import Trainer
from redo_nb.cli import parse_setting

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parents[1] / 'shared' / 'data'
DATA = {  # dataset -> (default root, default size, targets {protocol: IoU}, training split, scored split)
    'synthetic': (None, 32, {'dataset': 0.90}, 'train', 'test'),
    'synthetic2': (None, 32, {}, 'train', 'test'),  # two objects, n = 3 (issue 7: no target, a demonstration)
    'oxford17': (SHARED / 'oxford17_flowers', 64, {'image': 0.73, 'dataset': 0.73}, 'all', 'all'),
    'colored_mnist': (SHARED / 'mnist', 32, {'image': 0.80, 'dataset': 0.80}, 'train', 'test'),
}

def grabcut_scores(data, margin=0.1, iters=5):
    "GrabCut from a centred rectangle (no training) on every labelled image, both protocols; None without OpenCV."
    try: import cv2, numpy as np
    except ImportError: return None
    from redo_nb.metrics import segmentation_scores
    H = data.images.shape[-1]; m = max(1, round(margin * H))
    preds = []
    for img in data.images:
        mask = np.zeros((H, H), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(np.ascontiguousarray(img.permute(1, 2, 0).numpy()[:, :, ::-1]), mask, (m, m, H - 2 * m, H - 2 * m),
                    bgd, fgd, iters, cv2.GC_INIT_WITH_RECT)
        preds.append(torch.from_numpy(((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.int64)))
    preds, gt = torch.stack(preds), data.masks.long()
    return {p: segmentation_scores(preds, gt, protocol=p) for p in ('image', 'dataset')}

def refined_disc_scores(data, radius_frac):
    "The refinement (redo_nb.refine) started from the best centred disc on every scored image, both protocols."
    from redo_nb.metrics import centred_disc, masks_to_labels, segmentation_scores
    from redo_nb.refine import refine_masks
    images, gt = data.batch(torch.arange(len(data)))
    disc = centred_disc(gt.shape[-2:], radius_frac).float()
    M = torch.stack([disc, 1 - disc])[None] * 0.8 + 0.1  # F-like soft masks: 0.9 inside, 0.1 outside
    labels = torch.cat([masks_to_labels(refine_masks(M.expand(len(x), -1, -1, -1), x))
                        for x in images.split(128)])
    return {p: segmentation_scores(labels, gt.long(), protocol=p) for p in ('image', 'dataset')}

def curve_of(history):
    "One row per evaluation: minutes, iteration, model / average-mask IoU under both protocols."
    rows = []
    for r in history:
        if 'eval' not in r: continue
        e = r['eval']
        rows.append(dict(minutes=r['minutes'], iter=r['iter'], restarts=r['restarts'],
                         **{f'{k}_{p}': round(e[k][p]['iou'], 4)
                            for k in ('model', 'average_mask', 'refined', 'refined_average_mask') if k in e
                            for p in ('image', 'dataset')},
                         areas=[round(a, 3) for a in e['region_areas']]))
    return rows

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('dataset', choices=sorted(DATA)); ap.add_argument('--root', default=None)
    ap.add_argument('--preset', default='cpu'); ap.add_argument('--minutes', type=float, default=10)
    ap.add_argument('--iters', type=int, default=10**9, help='stop after this many iterations too (runs are deterministic per iteration with one thread: compare variants at equal iterations)')
    ap.add_argument('--size', type=int, default=None); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch chooses)')
    ap.add_argument('--eval-every', type=int, default=250); ap.add_argument('--name', default='')
    ap.add_argument('--results', default=str(HERE / 'results'), help='folder for the JSON and PNG')
    ap.add_argument('--out-dir', default=None, help='keep the run folder (checkpoints, sample grids) here (default: a temporary folder)')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='override a TrainConfig field')
    a = ap.parse_args(argv)
    root, size, targets, train_split, test_split = DATA[a.dataset]
    root, size = a.root or root, a.size or size
    if root is not None and not pathlib.Path(root).is_dir(): sys.exit(f'skipped: no {a.dataset} data at {root} (see ../shared/data/README.md)')
    kw = dict(n_images=5000) if a.dataset == 'colored_mnist' else {}
    train = get_dataset(a.dataset, root, size, train_split, **kw)
    scored = get_dataset(a.dataset, root, size, test_split, **({'n_images': 500} if kw else {})).labelled_subset()
    tag = f'learns_{a.dataset}' + (f'_{a.name}' if a.name else '')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = a.out_dir or tmp
        cfg = get_config(a.preset, dataset=a.dataset, n=train.n_regions, img_size=size, seed=a.seed, max_minutes=a.minutes,
                         iters=a.iters, eval_every=a.eval_every, ckpt_every=10**9, n_val=None, num_threads=a.threads,
                         out_dir=tmp, progress=False, **dict(parse_setting(s) for s in a.set))
        print(f'{tag}: {len(train)} training / {len(scored)} scored images, {size} px, n={train.n_regions}, '
              f'{a.minutes} min, threads {torch.get_num_threads() if a.threads is None else a.threads}')
        print('config:', {k: v for k, v in cfg.to_dict().items() if k not in ('out_dir',)})
        trainer = Trainer(cfg, data=train, val_data=scored)
        summary = trainer.fit()
        history = trainer.history
    curve, final = curve_of(history), summary['final']
    # foreground IoU throughout: for n > 2 the mean over the object labels (background excluded)
    baselines = {k: {p: round(final[k][p]['iou'], 4) for p in ('image', 'dataset')} for k in ('centred_disc', 'all_foreground')}
    if a.dataset == 'oxford17':
        gc = grabcut_scores(scored)
        baselines['grabcut'] = None if gc is None else {p: round(gc[p]['iou'], 4) for p in gc}
    if 'refined' in final and scored.n_regions == 2:  # the refinement started from the best centred disc instead of F: GrabCut's rectangle, in our terms
        disc = refined_disc_scores(scored, final['centred_disc']['radius_frac'])
        baselines['refined_centred_disc'] = {p: round(disc[p]['iou'], 4) for p in disc}
    cols = [k for k in ('model', 'average_mask', 'refined', 'refined_average_mask') if f'{k}_image' in curve[-1]]
    short = dict(model='IoU', average_mask='avgM', refined='refIoU', refined_average_mask='refAvgM')
    print(f"{'minutes':>8}{'iter':>7}" + ''.join(f"{short[k] + '/' + p[:3]:>12}" for k in cols for p in ('image', 'dataset')) + '  areas')
    for r in curve:
        print(f"{r['minutes']:8.2f}{r['iter']:7d}" + ''.join(f"{r.get(f'{k}_{p}', float('nan')):12.3f}" for k in cols for p in ('image', 'dataset'))
              + f"  {r['areas']}" + (f"  restarts {r['restarts']}" if r['restarts'] else ''))
    print('baselines (image / dataset):', baselines)
    best = max(curve, key=lambda r: r['model_image'])
    reached = {k: {p: final[k][p]['iou'] >= v for p, v in targets.items()} for k in ('model', 'refined') if k in final}
    print(f"final: {summary['iterations']} iterations in {summary['minutes']:.1f} min ({summary['sec_per_iter']:.3f} s/it), "
          f"restarts {summary['restarts']}; IoU image {final['model']['image']['iou']:.3f} / dataset "
          f"{final['model']['dataset']['iou']:.3f}; best (by per-image IoU, as best.pt) {best['model_image']:.3f} / "
          f"{best['model_dataset']:.3f} at {best['minutes']:.1f} min"
          + (f"; refined image {final['refined']['image']['iou']:.3f} / dataset {final['refined']['dataset']['iou']:.3f}" if 'refined' in final else '')
          + f"; targets {targets} reached: {reached}")
    out = dict(name=tag, dataset=a.dataset, config=cfg.to_dict(), threads=torch.get_num_threads(), summary=summary,
               curve=curve, baselines=baselines, targets=targets, reached=reached, best=best)
    res = pathlib.Path(a.results); res.mkdir(parents=True, exist_ok=True)
    (res / f'{tag}.json').write_text(json.dumps(out, indent=1, default=str))
    try:
        import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5)); x = [r['minutes'] for r in curve]
        for k, style in (('model_dataset', '-'), ('model_image', '--'), ('average_mask_dataset', ':'), ('refined_dataset', '-')):
            if k in curve[-1]: ax.plot(x, [r.get(k) for r in curve], style, label=k.replace('_', ' '))
        for (k, v), c in zip(baselines.items(), ('grey', 'tan', 'green', 'purple')):
            if v: ax.axhline(v['dataset'], color=c, lw=0.8, label=f'{k.replace("_", " ")} (dataset)')
        for v in set(targets.values()): ax.axhline(v, color='red', lw=0.5, ls='--', label='target')
        ax.set(xlabel='training minutes', ylabel='foreground IoU (mean over objects)', title=tag, ylim=(0, 1))
        ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(res / f'{tag}.png', dpi=90); plt.close(fig)
    except ImportError as e: print('no curve picture:', e)
    return out

if __name__ == '__main__':
    main()
