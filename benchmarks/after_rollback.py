"""What the learning rate after a rollback does, on photos: a paired comparison from one logged run.

A rollback (`redo_nb.robust.rollback`) returns a degrading run to `best.pt` and goes on at the run's learning rates
x `rollback_lr`. This script resumes a logged run's `best.pt` (full training state) as if it had been rolled back at
iteration AT with its rollbacks spent, and trains N iterations at the given learning-rate factor. Two calls with the
same checkpoint and different factors start from the same weights and random state: their difference is the factor's.

    python benchmarks/after_rollback.py humans RUN/best.pt --at 2250 --iters 750 --lr-scale 1.0 --name 'people, seed 2'

Appends an entry (F's IoU and health per evaluation, what the run hands over) to benchmarks/results/after_rollback.json.
"""
import argparse, dataclasses, json, pathlib, runpy, shutil, tempfile, time

import torch

from redo_nb.config import TrainConfig
from redo_nb.engine import load_checkpoint
from redo_nb.train import Trainer

HERE = pathlib.Path(__file__).resolve().parent
bench = runpy.run_path(str(HERE / 'unsupervised.py'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('dataset', choices=sorted(bench['DATA'])); ap.add_argument('checkpoint', help="a logged run's best.pt")
    ap.add_argument('--at', type=int, required=True, help='the iteration the run was rolled back at')
    ap.add_argument('--iters', type=int, default=750); ap.add_argument('--lr-scale', type=float, required=True)
    ap.add_argument('--name', required=True); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--results', default=str(HERE / 'results' / 'after_rollback.json'))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ck = load_checkpoint(a.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(TrainConfig.from_dict(ck['config']), out_dir=tmp, max_minutes=None, iters=a.at + a.iters,
                                  num_threads=a.threads, progress=False)
        data = bench['DATA'][a.dataset][0](cfg.img_size)
        t = Trainer(cfg, data=data, val_data=data.labelled_subset())
        shutil.copy(a.checkpoint, t.run_dir / 'best.pt')  # the model a later stop returns to
        t.resume(t.run_dir / 'best.pt')
        start = t.iteration
        t.iteration, t.rollbacks, t.lr_scale = a.at, cfg.max_rollbacks, a.lr_scale  # rolled back at `at`, rollbacks spent
        s = t.fit()
    records = [r for r in bench['run_records'](t.history) if r['iter'] >= a.at]
    for r in records:
        print(r['iter'], r.get('event') or f"F {r['eval']['model']['image']['iou']:.3f}  health {r['health']['score']:.3f}")
    entry = dict(dataset=a.dataset, name=a.name, lr_scale=a.lr_scale, best_iter=start, at=a.at, date=time.strftime('%Y-%m-%d'),
                 best_iou=ck['best']['iou'], records=records, degraded_at=s['degraded_at'],
                 handed_over=dict(iter=s['best']['iter'], iou=s['best']['iou']), end_iou=s['final']['model']['image']['iou'],
                 sec_per_iter=s['sec_per_iter'])
    path = pathlib.Path(a.results)
    old = json.loads(path.read_text()) if path.is_file() else []
    keep = [e for e in old if (e['dataset'], e['name'], e['lr_scale']) != (a.dataset, a.name, a.lr_scale)]
    path.write_text(json.dumps(keep + [entry], indent=1))
    print('best.pt: iteration', entry['handed_over']['iter'], f"F {entry['handed_over']['iou']:.3f}; the end: F {entry['end_iou']:.3f}")


if __name__ == '__main__':
    main()
