"""Unsupervised for real: train the `cpu` preset on real photo collections as a user would, and measure the model a
run hands over (best.pt, chosen without labels) against the labels it never saw.

    python benchmarks/unsupervised.py humans --minutes 30              # 290 photos of people, 64 px
    python benchmarks/unsupervised.py oxford17-3 --minutes 30          # Oxford-17, 3 classes (240 photos)
    python benchmarks/unsupervised.py oxford17 --minutes 60            # the full 1,360 photos
    python benchmarks/unsupervised.py synthetic --minutes 10           # the built-in data (32 px): must not get worse
    python benchmarks/unsupervised.py humans --minutes 30 --set augment= --name no-augment   # any TrainConfig field
    python benchmarks/unsupervised.py oxford17 --figure-from runs/x/best.pt   # the front page's figure from a model
    python benchmarks/unsupervised.py --merge /tmp/a/unsupervised.json /tmp/b/unsupervised.json   # runs made side by side
    python benchmarks/unsupervised.py oxford17-1 --figure-from "early=runs/x/best.pt" "end=runs/x/last.pt" --figure f.png

The run trains on every photo (labels unseen) and scores F (not refined) on the labelled ones at every evaluation,
beside the label-free health score. It reports F's IoU at the label-free choice (best.pt), at the end of the run, and
at the label-chosen best, and checks the targets: label-free choice within 0.03 of the label-chosen best; end of run
within 0.05 of the run's best; never below the centred disc after the first 10 minutes.

Results are merged into benchmarks/results/unsupervised.json (one entry per dataset, budget and name) and drawn in
benchmarks/results/unsupervised.png. Minutes are wall minutes of the training loop: run on an idle machine.
"""
import argparse, json, pathlib, sys, tempfile, time
from types import SimpleNamespace
import torch
from redo_nb.cli import parse_setting
from redo_nb.config import get_config
from redo_nb.datasets import get_dataset
from redo_nb.engine import load_checkpoint
from redo_nb.photos import oxford17_flowers
from redo_nb.robust import degrading, label_free_choice, plot_health, prior_scaffold
from redo_nb.train import Trainer
from redo_nb.viz import load_metrics

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parents[1] / 'shared' / 'data'
RESULTS = HERE / 'results'


def oxford17_classes(size, classes):
    "Oxford-17 photos of the given classes (80 per class, class = (number - 1) // 80)."
    full = oxford17_flowers(SHARED / 'oxford17_flowers', size, 'all')
    return full.subset([i for i in range(len(full)) if i // 80 in classes], name=f'oxford17-{len(classes)}')


DATA = {  # name -> (loader(size), default size)
    'humans': (lambda s: get_dataset('folder', SHARED / 'humans', s, 'train'), 64),
    'oxford17': (lambda s: oxford17_flowers(SHARED / 'oxford17_flowers', s, 'all'), 64),
    'oxford17-3': (lambda s: oxford17_classes(s, (0, 5, 9)), 64),
    'oxford17-1': (lambda s: oxford17_classes(s, (5,)), 64),
    'synthetic': (lambda s: get_dataset('synthetic', None, s, 'train'), 32),
}


def run_records(history):
    "The evaluation records (scores, health, areas) and the events of a run's history, for the JSON and plot_health."
    return [slim({k: v for k, v in r.items() if k != 'by_source'}) for r in history if 'health' in r or r.get('event')]


def slim(record: dict) -> dict:
    "`record` with only the IoUs of its evaluation (per image and per dataset, what `load_metrics` reads): a smaller JSON."
    if not isinstance(record.get('eval'), dict): return record
    ev = {name: {p: {'iou': s[p]['iou']} for p in ('image', 'dataset')} for name, s in record['eval'].items()
          if isinstance(s, dict) and 'image' in s}
    return {**record, 'eval': ev}


def verdict(records, upto: float | None = None, scaffold: int = 0):
    """F's IoU at the label-free choice (best.pt, `label_free_choice` replayed on the log), at the label-chosen best and at
    the end; the issue's targets. `largest_score`: F's IoU where the health score peaked (best.pt until session 11)."""
    ev = [r for r in load_metrics(records) if 'health_score' in r and 'val_iou' in r]
    if upto is not None:  # the run as if its budget had been `upto` minutes (the cpu preset has no schedule)
        ev = [r for r in ev if r['minutes'] <= upto * 1.02]
    by_iou, by_health, end = max(ev, key=lambda r: r['val_iou']), label_free_choice(ev, scaffold=scaffold), ev[-1]
    late = [r for r in ev if r['minutes'] >= 10]
    return dict(label_free=by_health['val_iou'], label_free_iter=by_health['iter'], labels=by_iou['val_iou'], end_iter=end['iter'],
                labels_iter=by_iou['iter'], end=end['val_iou'], largest_score=max(ev, key=lambda r: r['health_score'])['val_iou'], disc=end['val_disc_iou'],
                gap=round(by_iou['val_iou'] - by_health['val_iou'], 4), end_gap=round(by_iou['val_iou'] - end['val_iou'], 4),
                worst_after_10min=min((r['val_iou'] for r in late), default=None),
                targets=dict(choice_within_0_03=by_iou['val_iou'] - by_health['val_iou'] <= 0.03,
                             end_within_0_05=by_iou['val_iou'] - end['val_iou'] <= 0.05,
                             above_disc_after_10min=all(r['val_iou'] >= r['val_disc_iou'] for r in late)))


def scaffold_of(config: dict) -> int:
    "`prior_scaffold` of a run's saved config (runs older than the centre prior have none)."
    return prior_scaffold(SimpleNamespace(lambda_centre=config.get('lambda_centre', 0.), centre_iters=config.get('centre_iters', 0)))


def summary_table(results, dates=None) -> str:
    """The runs of `results` (entries of unsupervised.json; those of `dates` only, if given) as a markdown table, with
    a row for the first 30 minutes of longer runs: F's IoU at best.pt (label-free), at the label-chosen best, at the end.
    Verdicts are recomputed from each run's log, so older runs show the current label-free rule replayed."""
    ok = lambda b: 'yes' if b else '**no**'
    rows = ['| date | data | run | iterations | best.pt (label-free) | largest health score | best by labels | end | centred disc '
            '| lowest after 10 min | rollbacks | choice within 0.03 | end within 0.05 | above disc after 10 min |', '|' + '---|' * 14]
    for r in results:
        if dates and r.get('date') not in dates: continue
        s = scaffold_of(r['config'])
        for part, v in [('', verdict(r['records'], scaffold=s))] + [(f' (first {m} min)', verdict(r['records'], float(m), s)) for m in r.get('verdict_at', {})]:
            n = v.get('end_iter', r['iterations'])
            rb = sum(1 for x in r['records'] if x.get('event') == 'rollback' and x['iter'] <= n)
            t, worst = v['targets'], v['worst_after_10min']
            rows.append(f"| {r.get('date', '')} | {r['dataset']} | {r['name']}{part} | {n:,} | {v['label_free']:.3f} ({v['label_free_iter']:,}) "
                        f"| {v['largest_score']:.3f} | {v['labels']:.3f} ({v['labels_iter']:,}) | {v['end']:.3f} | {v['disc']:.3f} | "
                        f"{'-' if worst is None else f'{worst:.3f}'} | {rb} | {ok(t['choice_within_0_03'])} | "
                        f"{ok(t['end_within_0_05'])} | {ok(t['above_disc_after_10min'])} |")
    return '\n'.join(rows)


def budget_table(results, runs, minutes=(10, 20, 30, 60)) -> str:
    """`runs` ((label, session, data, budget in minutes[, run name]) of entries of `results`; the name where a session made
    several such runs) as a markdown table: F's IoU at the model best.pt would hold had the run's budget been each of
    `minutes` (the label-free rule replayed on its log), and the iterations made by then."""
    rows = [f"| data | run | {' | '.join(f'{m} min: best.pt (iterations)' for m in minutes)} | centred disc |", '|' + '---|' * (3 + len(minutes))]
    for label, session, data, budget, *name in runs:
        found = [r for r in results if (r.get('session'), r['dataset'], r['minutes_budget']) == (session, data, budget)
                 and (not name or r['name'] == name[0])]
        if len(found) != 1: raise ValueError(f'budget_table: {len(found)} runs of session {session} on {data} ({budget} min) named {name or "anything"}')
        r = found[0]
        made = {x['iter']: x['minutes'] for x in r['records'] if 'health' in x}
        def cell(m):
            if m > budget: return '-'
            v = verdict(r['records'], upto=m, scaffold=scaffold_of(r['config']))
            return f"{v['label_free']:.3f} ({max(i for i, t in made.items() if t <= m * 1.02):,})"
        rows.append(f"| {data} | {label} | {' | '.join(cell(m) for m in minutes)} | {verdict(r['records'])['disc']:.3f} |")
    return '\n'.join(rows)


def replay_degrading(records, drop: float, patience: int = 2, config: dict | None = None):
    """(iteration, F's IoU) of the first evaluation at which `redo_nb.robust.degrading` with `degrade_drop=drop` flags
    a run, replayed on its logged health scores up to its first rollback (after it the run is a different run); None.
    With the run's saved `config`, its own `settle_iters` (centre prior, self-training); without, peaks count from the start."""
    c = config or {}
    cfg = SimpleNamespace(degrade_drop=drop, degrade_patience=patience, on_degrade='rollback', lambda_centre=c.get('lambda_centre', 0.),
                          centre_iters=c.get('centre_iters', 0), lambda_self=c.get('lambda_self', 0.), self_warmup=c.get('self_warmup', 0))
    t = SimpleNamespace(cfg=cfg, history=[], _bad_evals=0)
    for r in records:
        if r.get('event') == 'rollback': return None
        t.history.append(r)
        if 'health' in r and degrading(t, r): return r['iter'], r['eval']['model']['image']['iou']
    return None


def plot(results, path, columns: int = 4):
    "One panel per run, `columns` to a row: health and IoU per evaluation, best.pt marked (`redo_nb.robust.plot_health`)."
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    runs = sorted(results, key=lambda r: (r.get('date', ''), r['dataset'], r['minutes_budget'], r['name']))
    rows = -(-len(runs) // columns)
    fig, axs = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, dpi=80)
    for ax, r in zip(axs.flat, runs):
        plot_health(r['records'], ax=ax, title=f"{r.get('date', '')} {r['dataset']} {r['name']}: {r['iterations']} it.", scaffold=scaffold_of(r['config']))
        ax.title.set_fontsize(8)
    for ax in axs.flat[len(runs):]: ax.axis('off')
    fig.tight_layout(); fig.savefig(path); plt.close(fig)


def masks_figure(ckpts: dict, data, path, n: int = 8, seed: int = 0):
    """Photos of `data` and, one row per entry of `ckpts` (row title -> checkpoint), the masks of that model (the object
    region as `redo_segment` picks it, its background dimmed): a PNG."""
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    from redo_nb.cli import border_mass
    from redo_nb.inference import load_model, segment
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    x, _ = data.batch(idx)
    img = ((x.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1)
    rows = [(None, img)]
    for title, ckpt in ckpts.items():
        M = segment(load_model(ckpt), x)
        obj = (M.argmax(1) == int(border_mass(M).argmin()))[..., None]
        rows.append((title, torch.where(obj, img, 0.25 * img.mean(-1, keepdim=True) + 0.1)))
    fig, axs = plt.subplots(len(rows), n, figsize=(1.45 * n, 1.65 * len(rows)), dpi=100, squeeze=False)
    for i, (title, pics) in enumerate(rows):
        for j in range(n): axs[i, j].imshow(pics[j]); axs[i, j].axis('off')
        if title: axs[i, 0].set_title(title, fontsize=9, loc='left')
    fig.tight_layout(pad=0.2); fig.savefig(path); plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('dataset', nargs='?', choices=sorted(DATA)); ap.add_argument('--minutes', type=float, default=30)
    ap.add_argument('--iters', type=int, default=10**9); ap.add_argument('--size', type=int)
    ap.add_argument('--seed', type=int, default=0); ap.add_argument('--threads', type=int)
    ap.add_argument('--name', default='preset'); ap.add_argument('--out-dir', help='keep the run folder here')
    ap.add_argument('--session', help="the work session's label, for grouping on the results page")
    ap.add_argument('--results', default=str(RESULTS), help='folder of unsupervised.json and .png')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    ap.add_argument('--figure-from', nargs='+', metavar='[TITLE=]CKPT',
                    help="only draw the dataset's photos with the masks of these checkpoints (one row each)")
    ap.add_argument('--figure', default=str(HERE.parent / 'nbs' / 'images' / 'handover.png'), help='where --figure-from draws')
    ap.add_argument('--merge', nargs='+', metavar='JSON',
                    help='merge the entries of these unsupervised.json files (runs made side by side, each with its own --results) into --results')
    a = ap.parse_args(argv)
    if a.merge: return save_entries([e for f in a.merge for e in json.loads(pathlib.Path(f).read_text())], pathlib.Path(a.results))
    if a.dataset is None: ap.error('a dataset is needed (or --merge)')
    loader, size = DATA[a.dataset]
    if a.figure_from:
        ckpts = dict(c.split('=', 1) if '=' in c else ('' if len(a.figure_from) == 1 else c, c) for c in a.figure_from)
        return masks_figure(ckpts, loader(load_checkpoint(next(iter(ckpts.values())))['config']['img_size']), a.figure)
    if a.dataset != 'synthetic' and not SHARED.is_dir(): sys.exit(f'skipped: no data at {SHARED} (see its README)')
    size = a.size or size
    data = loader(size)
    scored = data.labelled_subset() if a.dataset != 'synthetic' else get_dataset('synthetic', None, size, 'val').subset(range(256))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = get_config('cpu', img_size=size, seed=a.seed, max_minutes=a.minutes, iters=a.iters, n_val=None,
                         num_threads=a.threads, out_dir=a.out_dir or tmp, name=f'{a.dataset}-{a.name}', progress=False,
                         **dict(parse_setting(s) for s in a.set))
        print(f'{a.dataset}: {len(data)} photos, {len(scored)} scored, {size} px, {a.minutes} min, threads {torch.get_num_threads() if a.threads is None else a.threads}')
        trainer = Trainer(cfg, data=data, val_data=scored)
        summary = trainer.fit()
    records = run_records(trainer.history)
    v = verdict(records, scaffold=prior_scaffold(cfg))
    for r in load_metrics(records):
        if 'health_score' in r: print(f"{r['minutes']:7.2f} min {r['iter']:6d} it  F {r['val_iou']:.3f}  health {r['health_score']:.3f}  disc {r['val_disc_iou']:.3f}")
        else: print('   ', r)
    print('verdict:', json.dumps(v))
    at = {'30': verdict(records, upto=30, scaffold=prior_scaffold(cfg))} if a.minutes > 30 else {}  # the 30-minute budget seen inside a longer run
    for m, vm in at.items(): print(f'verdict after {m} min:', json.dumps(vm))
    entry = dict(dataset=a.dataset, name=a.name, session=a.session, date=time.strftime('%Y-%m-%d'), minutes_budget=a.minutes, iterations=summary['iterations'],
                 minutes=summary['minutes'], sec_per_iter=round(summary['sec_per_iter'], 4), threads=torch.get_num_threads(),
                 stopped_by=summary['stopped_by'], rollbacks=summary['rollbacks'], degraded_at=summary.get('degraded_at'), config=cfg.to_dict(), records=records, verdict=v,
                 verdict_at=at)
    save_entries([entry], pathlib.Path(a.results))
    return entry


def save_entries(entries, res: pathlib.Path):
    "Merge `entries` into `res`/unsupervised.json (replacing those of the same dataset, budget and name), redraw, print."
    res.mkdir(parents=True, exist_ok=True)
    path, key = res / 'unsupervised.json', lambda r: (r['dataset'], r['minutes_budget'], r['name'])
    new = {key(e) for e in entries}
    results = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if key(r) not in new] + entries
    results = [{**r, 'records': [slim(x) for x in r['records']]} for r in results]
    path.write_text(json.dumps(results, indent=1))
    plot(results, res / 'unsupervised.png')
    print(summary_table(entries))


if __name__ == '__main__':
    main()
