"""The issue's acceptance run, as a user makes it: `redo_train --dataset folder --root DIR --size 64 --minutes M` on a
plain folder of photos (JPEGs directly inside it, no masks, no other flag); afterwards the models the run handed
over, best.pt (chosen without labels) and last.pt, are scored on the labels the run never saw.

    python benchmarks/plain_folder.py oxford17-3 --minutes 30            # writes the folder, trains, scores
    python benchmarks/plain_folder.py oxford17-3 --score runs/ox3-plain  # only score a finished run of that data
    python benchmarks/plain_folder.py oxford17-1 --minutes 60 --threads 1
    python benchmarks/plain_folder.py oxford17-3 --minutes 60 --threads 1 --set lambda_centre=1  # passed on to redo_train

The folder holds the collection's photos as JPEG files at their stored size. The run's own report (what redo_train
prints) is kept with the scores in benchmarks/results/plain_folder.json, one entry per dataset, minutes, threads and
the extra redo_train arguments (`options`).
"""
import argparse, json, pathlib, shutil, subprocess, sys, tempfile, time
import torch
from redo_nb.inference import load_model
from redo_nb.metrics import evaluate
from redo_nb.viz import load_metrics

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from unsupervised import DATA, SHARED  # noqa: E402  the same collections as the unsupervised benchmark

SOURCES = {'oxford17-3': ('oxford17_flowers/images_256', [k for c in (0, 5, 9) for k in range(80 * c + 1, 80 * c + 81)]),
           'oxford17-1': ('oxford17_flowers/images_256', list(range(401, 481))),
           'humans': ('humans/images', None)}


def write_folder(dataset: str, folder: pathlib.Path) -> int:
    "Copy the photos of `dataset` into `folder`, directly (no images/ sub-folder, no masks); returns how many."
    sub, numbers = SOURCES[dataset]
    src = SHARED / sub
    files = [src / f'image_{k:04d}.jpg' for k in numbers] if numbers else sorted(src.glob('*.jpg'))
    folder.mkdir(parents=True, exist_ok=True)
    for f in files: shutil.copy(f, folder / f.name)
    return len(files)


def score(run: pathlib.Path, dataset: str) -> dict:
    "F's IoU per image (the paper's protocol, masks not refined) of best.pt and last.pt on the labelled photos, and the disc."
    out, models = {}, {name: load_model(run / name) for name in ('best.pt', 'last.pt')}
    data = DATA[dataset][0](models['best.pt'].config.img_size).labelled_subset()
    x, gt = data.batch(torch.arange(len(data)))
    for name, model in models.items():
        s = evaluate(model.masks, x, gt)
        out[name] = round(s['model']['image']['iou'], 4)
        out['disc'] = round(s['centred_disc']['image']['iou'], 4)
    recs = load_metrics(run)
    ev = [r for r in recs if 'health_score' in r]
    best = json.loads((run / 'summary.json').read_text())['best'] if (run / 'summary.json').is_file() else None
    return dict(**out, best_iter=best and best['iter'], iterations=ev[-1]['iter'] if ev else None,
                minutes=ev[-1]['minutes'] if ev else None, events=[r for r in recs if r.get('event')],
                health=[(r['iter'], round(r['health_score'], 4), round(r['health_agreement'], 4)) for r in ev])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('dataset', choices=sorted(SOURCES)); ap.add_argument('--minutes', type=float, default=30)
    ap.add_argument('--size', type=int, default=64); ap.add_argument('--threads', type=int, help='torch threads (default: all)')
    ap.add_argument('--score', metavar='RUN_DIR', help='score this finished run instead of training')
    ap.add_argument('--report-file', help="with --score: a file holding what redo_train printed")
    ap.add_argument('--out-dir', help='keep the folder and the run here (default: a temporary folder)')
    ap.add_argument('--results', default=str(HERE / 'results'))
    a, extra = ap.parse_known_args(argv)
    if not SHARED.is_dir(): sys.exit(f'skipped: no data at {SHARED} (see its README)')
    report = None
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(a.out_dir or tmp)
        if a.score: run = pathlib.Path(a.score)
        else:
            folder, run = work / f'{a.dataset}-photos', work / 'runs' / f'{a.dataset}-plain'
            print(f'{a.dataset}: {write_folder(a.dataset, folder)} photos in {folder}')
            cmd = ['redo_train', '--dataset', 'folder', '--root', str(folder), '--size', str(a.size), '--minutes', str(a.minutes),
                   '--out', str(run.parent), '--name', run.name, '--quiet', *extra]
            if a.threads: cmd += ['--set', f'num_threads={a.threads}']
            print(' '.join(cmd))
            report = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
            print(report)
        s, cfg = score(run, a.dataset), json.loads((run / 'config.json').read_text())
    if a.report_file: report = pathlib.Path(a.report_file).read_text().strip()
    entry = dict(dataset=a.dataset, date=time.strftime('%Y-%m-%d'), minutes_budget=a.minutes if not a.score else cfg.get('max_minutes'),
                 threads=a.threads or cfg.get('num_threads') or torch.get_num_threads(), options=extra, report=report, **s)
    print(json.dumps({k: v for k, v in entry.items() if k not in ('health', 'report')}))
    path = pathlib.Path(a.results) / 'plain_folder.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    key = lambda e: (e['dataset'], e['minutes_budget'], e['threads'], e.get('options', []))
    results = [e for e in (json.loads(path.read_text()) if path.is_file() else []) if key(e) != key(entry)] + [entry]
    path.write_text(json.dumps(results, indent=1))
    return entry


if __name__ == '__main__':
    main()
