#!/usr/bin/env python
"""One source for the headline numbers: `benchmarks/results/headline.json` -> the results table of the notebooks.

    python tools/results_table.py            # print the table (markdown)
    python tools/results_table.py --write    # put it between the markers of every notebook that has them
    python tools/results_table.py --check    # exit 1 when a notebook's table differs from the JSON (CI)

The table goes between two lines of a markdown cell (the first cell that holds them; README.md follows via
`tools/make_readme.py`):

    <!-- results-table:start -->
    <!-- results-table:end -->

Everything between them is replaced: edit the JSON (or rerun the benchmark that writes it), never the table.

`headline.json` is an object `{"schema": 1, "rows": [ROW, ...]}` (a bare list of rows is accepted too). A ROW:

    data              str    the data set, as the table shows it ("Oxford-17 flowers, 64 px, 1,360 photos")
    scored_on         str    optional: what was scored ("256 validation images", "the 846 labelled")
    n_regions         int    optional: n; shown as "n = 3" when it is not 2
    preset            str    the preset the run used ("cpu")
    command           str    the command that produced the numbers ("redo_train",
                             "python benchmarks/learns.py oxford17 --size 64 --minutes 45")
    budget_minutes    num    the time budget of the run
    minutes           num    the minutes the run took (shown when it differs from the budget by more than 10%)
    iterations        int    training iterations done
    conditions        str    optional: how the machine was used ("two threads, idle machine")
    f_iou             IOU    F's masks (the paper's segmentation), optionally with "best": the best IoU during the run
    refined_iou       IOU    F's masks refined on image edges, or null when not measured
    own_average_mask  BASE   the model's mean mask used for every image
    centred_disc      BASE   the best centred disc
    other_baselines   list   optional: [{"name": "GrabCut", "per_image": 0.765, "per_dataset": 0.680}, ...]
    target            obj    {"iou": 0.73, "protocol": "per_image" | "per_dataset" | "both",
                              "reached": "F" | "refined" | "no", "note": "from 22 min on"}, or null (no target)
    note              str    optional: shown after the data set ("session 3, before self-training")
    source            str    the result file the numbers come from, relative to the repository
                             ("benchmarks/results/learns_oxford17_s6.json"); it must exist

    IOU  = {"per_image": 0.784, "per_dataset": 0.784}   (the paper's protocol / one matching for the whole set)
    BASE = {"raw": IOU, "refined": IOU or null, "note": "optional text after the refined numbers"}

Numbers are shown with three decimals; "a / b" is per image / per dataset, one number when both agree. F and F refined
are in bold where they reach the target on its protocol.
"""
import argparse, json, math, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ROOT/'benchmarks'/'results'/'headline.json'
START, END = '<!-- results-table:start -->', '<!-- results-table:end -->'
SKIP_PARTS = ('_proc', '_docs', '_site', '.ipynb_checkpoints')
PROTOCOLS = ('per_image', 'per_dataset', 'both')
REACHED = ('F', 'refined', 'no')


class TableError(Exception): "headline.json is missing or malformed, or a notebook's markers are."

# --------------------------------------------------------------------------- reading and checking the JSON

def _iou_ok(d, where, allow_none=False):
    if d is None and allow_none: return []
    if not isinstance(d, dict): return [f'{where} must be an object {{"per_image": x, "per_dataset": y}}']
    res = []
    for k in ('per_image', 'per_dataset'):
        v = d.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1 or math.isnan(v):
            res.append(f'{where}.{k} must be a number in [0, 1], not {v!r}')
    if 'best' in d and d['best'] is not None and not (isinstance(d['best'], (int, float)) and 0 <= d['best'] <= 1):
        res.append(f'{where}.best must be a number in [0, 1] or null')
    return res

def row_problems(row, i, root=ROOT):
    "What is wrong with row `i` of headline.json (missing or mistyped fields, a `source` that does not exist)."
    w = f'row {i + 1}'
    if not isinstance(row, dict): return [f'{w} must be an object']
    res = []
    for k in ('data', 'command', 'source', 'preset'):
        if not isinstance(row.get(k), str) or not row[k].strip(): res.append(f'{w}: "{k}" must be a non-empty string')
    for k in ('budget_minutes', 'minutes'):
        if not isinstance(row.get(k), (int, float)) or isinstance(row.get(k), bool) or row[k] <= 0:
            res.append(f'{w}: "{k}" must be a positive number')
    if not isinstance(row.get('iterations'), int) or isinstance(row.get('iterations'), bool) or row['iterations'] < 0:
        res.append(f'{w}: "iterations" must be a whole number')
    res += _iou_ok(row.get('f_iou'), f'{w}: f_iou')
    res += _iou_ok(row.get('refined_iou'), f'{w}: refined_iou', allow_none=True)
    for k in ('own_average_mask', 'centred_disc'):
        b = row.get(k)
        if not isinstance(b, dict): res.append(f'{w}: "{k}" must be an object {{"raw": ..., "refined": ...}}')
        else: res += _iou_ok(b.get('raw'), f'{w}: {k}.raw') + _iou_ok(b.get('refined'), f'{w}: {k}.refined', True)
    for j, o in enumerate(row.get('other_baselines') or []):
        if not isinstance(o, dict) or not isinstance(o.get('name'), str): res.append(f'{w}: other_baselines[{j}] needs a "name"')
        else: res += _iou_ok(o, f'{w}: other_baselines[{j}]')
    t = row.get('target')
    if t is not None:
        if not isinstance(t, dict): res.append(f'{w}: "target" must be an object or null')
        else:
            if not isinstance(t.get('iou'), (int, float)) or not 0 < t['iou'] <= 1: res.append(f'{w}: target.iou must be in (0, 1]')
            if t.get('protocol') not in PROTOCOLS: res.append(f'{w}: target.protocol must be one of {PROTOCOLS}')
            if t.get('reached') not in REACHED: res.append(f'{w}: target.reached must be one of {REACHED}')
    if isinstance(row.get('source'), str) and row['source'].strip():
        if not (root/row['source']).exists(): res.append(f'{w}: source {row["source"]} does not exist')
    return res

def load_rows(path=HEADLINE, root=ROOT):
    "The rows of headline.json at `path`, checked; raise `TableError` naming every problem."
    path = Path(path)
    if not path.exists(): raise TableError(f'{path} does not exist')
    try: data = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e: raise TableError(f'{path} is not valid JSON: {e}')
    rows = data.get('rows') if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows: raise TableError(f'{path}: expected {{"rows": [...]}} with at least one row')
    probs = [p for i, r in enumerate(rows) for p in row_problems(r, i, root)]
    if probs: raise TableError(f'{path}:\n  ' + '\n  '.join(probs))
    return rows

# --------------------------------------------------------------------------- the table

def _num(x): return f'{x:.3f}'

def _pair(d):
    "`a / b` (per image / per dataset), one number when they agree to three decimals."
    if d is None: return '-'
    a, b = _num(d['per_image']), _num(d['per_dataset'])
    return a if a == b else f'{a} / {b}'

def _meets(d, target):
    "Whether IoU `d` reaches `target` on its protocol."
    if not target or d is None: return False
    keys = {'per_image': ['per_image'], 'per_dataset': ['per_dataset'], 'both': ['per_image', 'per_dataset']}[target['protocol']]
    return all(round(d[k], 3) >= target['iou'] for k in keys)

def _bold(s, on): return f'**{s}**' if on else s

def _esc(s):
    "Text for a pipe-table cell: `|` escaped (also inside math: pandoc would split the cell there)."
    return str(s).replace('|', r'\|')

def _baseline(b, extra=()):
    s = _pair(b['raw'])
    if b.get('refined') is not None:
        note = f' {b["note"]}' if b.get('note') else ''
        s += f' ({_pair(b["refined"])}{note})'
    for o in extra: s += f'; {o["name"]} {_pair(o)}'
    return s

def _target(row):
    t = row.get('target')
    if not t: return 'none (a demonstration)'
    proto = {'per_image': 'per image', 'per_dataset': 'per dataset', 'both': 'both'}[t['protocol']]
    reached = {'F': '**reached by F**', 'refined': '**reached refined**', 'no': 'not reached'}[t['reached']]
    s = f'{t["iou"]:.2f} {proto}: {reached}'
    if t.get('note'): s += f' ({t["note"]})'
    if t['reached'] == 'refined':
        f = row['f_iou']
        s += f'; F alone {_pair(f)}' + (f' (best {_num(f["best"])})' if f.get('best') is not None else '')
    return s

def _budget(row):
    s = f'{row["budget_minutes"]:g} min, {row["iterations"]:,} it.'
    if abs(row['minutes'] - row['budget_minutes']) > 0.1 * row['budget_minutes']: s += f' in {row["minutes"]:.1f} min'
    if row.get('conditions'): s += f' ({row["conditions"]})'
    return s

def _data(row, show_preset):
    s = row['data']
    if row.get('n_regions') not in (None, 2): s += f', n = {row["n_regions"]}'
    extra = [x for x in (row.get('scored_on'), f'`{row["preset"]}` preset' if show_preset else None, row.get('note')) if x]
    return s + (f' ({"; ".join(extra)})' if extra else '')

def consistency_warnings(rows):
    "Rows whose `target.reached` disagrees with their numbers (a warning: a run may define 'reached' its own way)."
    res = []
    for i, r in enumerate(rows):
        t = r.get('target')
        if not t: continue
        f, ref = _meets(r['f_iou'], t), _meets(r.get('refined_iou'), t)
        expect = 'F' if f else 'refined' if ref else 'no'
        if expect != t['reached']: res.append(f'row {i + 1} ({r["data"]}): target.reached is {t["reached"]!r}, the numbers say {expect!r}')
    return res

def render(rows):
    "The markdown that goes between the markers: the table, then the commands and files behind each row."
    presets = {r['preset'] for r in rows}
    one = len(presets) == 1
    head = ['data' + (f' (`{next(iter(presets))}` preset)' if one else ''), 'budget', 'F', 'F refined',
            'own average mask (refined)', 'centred disc (refined)', 'target']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        t = r.get('target')
        cells = [_data(r, not one), _budget(r),
                 _bold(_pair(r['f_iou']), _meets(r['f_iou'], t)) + (f' (best {_num(r["f_iou"]["best"])})' if r['f_iou'].get('best') is not None else ''),
                 _bold(_pair(r.get('refined_iou')), _meets(r.get('refined_iou'), t)),
                 _baseline(r['own_average_mask']), _baseline(r['centred_disc'], r.get('other_baselines') or ()),
                 _target(r)]
        lines.append('| ' + ' | '.join(_esc(c) for c in cells) + ' |')
    made = '; '.join(f'row {i + 1}: `{r["command"]}` (`{r["source"]}`)' for i, r in enumerate(rows))
    return '\n'.join(lines) + f'\n\nProduced by {made}.'

# --------------------------------------------------------------------------- notebooks

def find_notebooks(nbs_path):
    return sorted(p for p in Path(nbs_path).rglob('*.ipynb')
                  if not any(s in SKIP_PARTS or s.startswith('.') for s in p.relative_to(nbs_path).parts))

def _read_nb(path):
    text = Path(path).read_text(encoding='utf-8')
    return json.loads(text), text

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def marked_cells(nb):
    """(cell index, source) of the markdown cells that hold the markers; raise `TableError` when they are unbalanced or
    out of order."""
    res = []
    for i, cell in enumerate(nb['cells']):
        src = _src(cell)
        n_start, n_end = src.count(START), src.count(END)
        if not n_start and not n_end: continue
        if cell['cell_type'] != 'markdown': raise TableError(f'cell {i}: the results-table markers must be in a markdown cell')
        if n_start != 1 or n_end != 1 or src.index(START) > src.index(END):
            raise TableError(f'cell {i}: needs exactly one "{START}" followed by one "{END}" (found {n_start} and {n_end})')
        res.append((i, src))
    return res

def replace_table(src, table):
    "`src` with everything between the markers replaced by `table` (blank lines around it)."
    a, b = src.index(START) + len(START), src.index(END)
    return src[:a] + '\n\n' + table.strip() + '\n\n' + src[b:]

def table_in(src):
    "What sits between the markers of `src`, stripped."
    return src[src.index(START) + len(START):src.index(END)].strip()

def stale_cells(nb_path, table):
    "Cells of notebook `nb_path` whose table between the markers is not `table`: [(cell index, message)]."
    nb, _ = _read_nb(nb_path)
    return [(i, f'cell {i}: the results table is stale (it differs from benchmarks/results/headline.json): '
                'run python tools/results_table.py --write')
            for i, src in marked_cells(nb) if table_in(src) != table.strip()]

def write_notebook(nb_path, table):
    "Put `table` between the markers of notebook `nb_path`; return the indices of the cells that changed."
    nb, text = _read_nb(nb_path)
    changed = []
    for i, src in marked_cells(nb):
        new = replace_table(src, table)
        if new != src:
            nb['cells'][i]['source'] = new.splitlines(keepends=True)
            changed.append(i)
    if changed:  # the format nbdev writes: one space indent, unicode kept, keys in their order, final newline
        Path(nb_path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    return changed

def check(nbs, json_path=HEADLINE, root=ROOT):
    "Problems with the tables of notebooks `nbs` as (notebook, message) pairs; [] when all are up to date."
    marked, res = [], []
    for nb in nbs:
        try:
            if marked_cells(_read_nb(nb)[0]): marked.append(nb)
        except TableError as e: res.append((nb, str(e)))
    if not marked: return res
    try: table = render(load_rows(json_path, root))
    except TableError as e: return res + [(nb, f'results table not checked: {e}') for nb in marked]
    for nb in marked: res += [(nb, msg) for _, msg in stale_cells(nb, table)]
    return res

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--write', action='store_true', help='write the table between the markers of the notebooks')
    g.add_argument('--check', action='store_true', help='exit 1 when a notebook\'s table is stale')
    ap.add_argument('--json', type=Path, default=HEADLINE, help='the rows (default: %(default)s)')
    ap.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='folder of the notebooks (default: %(default)s)')
    ap.add_argument('--root', type=Path, default=ROOT, help='repository root that `source` paths are relative to')
    args = ap.parse_args(argv)
    rel = lambda p: p.relative_to(args.root) if p.resolve().is_relative_to(args.root.resolve()) else p
    try: rows = load_rows(args.json, args.root)
    except TableError as e:
        print(f'results_table: {e}', file=sys.stderr)
        return 1
    for w in consistency_warnings(rows): print(f'results_table: warning: {w}', file=sys.stderr)
    table = render(rows)
    nbs = find_notebooks(args.nbs)
    if args.check:
        probs = check(nbs, args.json, args.root)
        for nb, msg in probs: print(f'results_table: {rel(nb)}: {msg}', file=sys.stderr)
        if probs: return 1
        n = sum(bool(marked_cells(_read_nb(nb)[0])) for nb in nbs)
        if n: print(f'results_table: the results table is up to date in {n} notebook(s)')
        else: print(f'results_table: no notebook in {rel(args.nbs)} has the markers {START} / {END}: nothing checked')
        return 0
    if args.write:
        n = 0
        for nb in nbs:
            try: changed = write_notebook(nb, table)
            except TableError as e:
                print(f'results_table: {rel(nb)}: {e}', file=sys.stderr)
                return 1
            if changed: print(f'results_table: wrote the table in {rel(nb)} (cells {", ".join(map(str, changed))})')
            n += bool(changed)
        if not n: print('results_table: nothing to write (tables up to date, or no notebook has the markers)')
        return 0
    print(table)
    return 0

if __name__ == '__main__': sys.exit(main())
