#!/usr/bin/env python
"""Check the documentation site offline, without Quarto.

    python tools/check_docs.py [--no-browser | --browser] [NOTEBOOK ...]

Quarto cannot be installed everywhere (nor is it needed to catch most doc bugs), so this script
reproduces what `nbdev_docs` does up to the point where Quarto takes over, and checks the result:

1. every notebook in `nbs/` (files and folders starting with `_` or `.` are skipped) goes through
   nbdev's own docs processing: the `FilterDefaults` processors that `nbdev_proc_nbs` applies, run in
   a fresh process with `IN_TEST=1` like `nbdev.serve_drv.main` does, into a temporary folder (the
   repository's `_proc/` is left alone). A processor that raises, and nbdev's warning about cells that
   mix imports with other code, are failures;
2. the source notebooks must hold no error outputs and no tracebacks on stderr;
3. stored `show_doc` outputs must be current: for every code cell that is a single `show_doc(X)` call, `X` is
   looked up in the notebook's module (`#| default_exp name` -> `redo_nb.name`, then the notebook's imports),
   rendered now with nbdev's `show_doc` (the markdown renderer that made the stored `text/markdown`), and its
   signature, title and docstring compared with the stored output, which is what GitHub and Jupyter show
   (the site re-runs `show_doc`); a difference, or no stored output, says to re-execute the notebook;
4. markdown source of the notebooks (outside code): pipe-table rows must have as many cells as their
   header, counted the way Quarto's pandoc splits them (a `|` inside `$...$` math splits a cell unless
   escaped; write `\\vert`), and no table-like line may sit outside a table; links must work on GitHub, in
   Jupyter and on the site: notebooks link each other with relative `X.ipynb` links (optionally `#anchor`),
   which must exist; a link to a page of the site (`train.html`) is a failure naming the `.ipynb` to link
   instead; relative links to files that do not exist in the repository are failures;
5. every function and class in each module's `__all__` must have a docstring and a `show_doc` cell in
   its notebook, written by hand or added by nbdev's `add_show_docs`; no name may be exported by two
   modules (nbdev's doc links would pick one); constants never mentioned in the prose are notes;
6. results tables (between `<!-- results-table:start -->` and `<!-- results-table:end -->`) must be what
   `tools/results_table.py` makes of `benchmarks/results/headline.json`;
7. `_quarto.yml`'s sidebar and navbar must point at notebooks/pages that exist;
8. each processed notebook is rendered to HTML with nbconvert (with the Quarto directives nbdev
   relies on applied: title from the front matter, `echo: false`, `include: false`, `output: false`, and
   `X.ipynb` links rewritten to their pages, `05_train.ipynb` -> `train.html`, as Quarto does), and checked
   statically: title, local images and links to other pages of the site exist (any page of the site, also
   when only some notebooks are checked), and no markdown table is left as raw text outside `<pre>`/`<code>`
   (a `|---|` line, or a line that starts with `| ` and ends with ` |`);
9. browser check (skip with `--no-browser`): the HTML folder is served on 127.0.0.1 by
   `python -m http.server` and every page is loaded by headless Chromium, with every other host
   blocked so the result does not depend on the network. A small script injected into each page
   reports, once the page has loaded, its title, its `<h1>`, every `<img>` that failed to load
   (`naturalWidth == 0`), uncaught JavaScript errors and TeX errors (pages use a local MathJax 2
   with its quiet `noErrors`/`noUndefined` extensions off); a screenshot of each page goes to
   `.docs_check/` (git-ignored).

Chromium: the script uses `$CHROME_BIN`, `chromium`, `chromium-browser` or `google-chrome`. MathJax: the
files of the `jupyter-server-mathjax` package. When either is missing, it is installed (Debian's
`chromium` with apt-get; `pip install --no-deps jupyter-server-mathjax`), but only with `--browser` or
on CI (`$CI` set); otherwise that check is skipped with a note. Exit status 1 when anything failed.
"""
import argparse, ast, concurrent.futures as cf, html, json, multiprocessing as mp, os, re, shutil
import subprocess, sys, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT/'.docs_check'
SKIP_PARTS = ('_proc', '_docs', '_site')

# --------------------------------------------------------------------------- nbdev processing

def process_notebook(src, dst):
    "Apply nbdev's docs processors to `src` and write the result to `dst` (runs in a fresh process)."
    os.chdir(ROOT)  # nbdev's config (settings.ini) is found from the working directory
    os.environ['IN_TEST'] = '1'
    from execnb.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            nb = read_nb(src)
            FilterDefaults()(nb)
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            write_nb(nb, dst)
        except Exception as e:
            cause = f'\n    caused by {type(e.__cause__).__name__}: {e.__cause__}' if e.__cause__ else ''
            problems.append(f'nbdev processing failed: {type(e).__name__}: ' + str(e).strip().replace('\n', '\n    ') + cause)
    for w in caught:
        msg = str(w.message).strip()
        if 'imports and other code' in msg: problems.append('nbdev: ' + msg.replace('\n', '\n    '))
    return problems

def process_all(nbs, nbs_path, proc_path, n_workers):
    "Process `nbs` in parallel, one fresh process per notebook; return {notebook: [problems]}."
    ctx = mp.get_context('spawn')
    with cf.ProcessPoolExecutor(n_workers, mp_context=ctx, max_tasks_per_child=1) as ex:
        futs = {nb: ex.submit(process_notebook, str(nb), str(proc_path/nb.relative_to(nbs_path)))
                for nb in nbs}
        res = {}
        for nb, f in futs.items():
            try: res[nb] = f.result()
            except Exception as e: res[nb] = [f'nbdev processing crashed: {type(e).__name__}: {e}']
        return res

# --------------------------------------------------------------------------- source notebook checks

def output_problems(nb):
    "Error outputs and tracebacks printed to stderr in the (unprocessed) notebook `nb`."
    res = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get('outputs', []):
            if o.output_type == 'error': res.append(f'cell {i}: error output {o.ename}: {o.evalue}')
            elif o.output_type == 'stream' and o.name == 'stderr' and 'Traceback' in o.text:
                res.append(f'cell {i}: traceback on stderr: {o.text.strip().splitlines()[-1]}')
    return res

def module_notebook(py_path):
    "The notebook a generated module says it was exported from (its 'File to edit' header)."
    m = re.search(r'File to edit: (\S+?)\.?\s*$', py_path.read_text(encoding='utf-8'), re.MULTILINE)
    return (py_path.parent/m.group(1)).resolve() if m else None

def shown_names(nb):
    "Names passed to `show_doc` in the code cells of the processed notebook `nb`."
    names = set()
    for cell in nb.cells:
        if cell.cell_type != 'code': continue
        src = '\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith(('#|', '%')))
        try: tree = ast.parse(src)
        except SyntaxError: continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'show_doc' and node.args):
                names.add(ast.unparse(node.args[0]))
    return names

def export_problems(lib_path, lib_name, proc_nbs):
    """Per notebook: exported functions and classes without a docstring or a `show_doc` (failures), and
    exported constants never mentioned in the notebook's prose (notes). `proc_nbs` maps source -> processed notebook."""
    import importlib, inspect
    res, notes, owners = {}, {}, {}
    for py in sorted(lib_path.rglob('*.py')):
        if py.name.startswith('_'): continue
        nb_path = module_notebook(py)
        if nb_path is None or nb_path not in proc_nbs: continue
        modname = '.'.join((lib_name,) + py.relative_to(lib_path).with_suffix('').parts)
        probs = res.setdefault(nb_path, [])
        try: mod = importlib.import_module(modname)
        except Exception as e:
            probs.append(f'cannot import {modname}: {type(e).__name__}: {e}')
            continue
        nb = proc_nbs[nb_path]
        shown = shown_names(nb)
        prose = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
        for name in getattr(mod, '__all__', []):
            owners.setdefault(name, []).append((modname, nb_path))
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                if not (obj.__doc__ or '').strip(): probs.append(f'{modname}.{name} has no docstring')
                if name not in shown: probs.append(f'{modname}.{name} has no show_doc cell')
            elif not re.search(rf'\b{re.escape(name)}\b', prose):
                notes.setdefault(nb_path, []).append(f'{modname}.{name} (a {type(obj).__name__}) is never mentioned in the prose')
    for name, where in owners.items():  # nbdev links `name` in prose to one of them only
        if len(where) > 1:
            for modname, nb_path in where:
                others = ', '.join(m for m, _ in where if m != modname)
                res[nb_path].append(f'{modname}.{name} is also exported by {others}: doc links to `{name}` are ambiguous')
    return res, notes

def sidebar_problems(quarto_yml, nbs_path, pages):
    "Sidebar entries and navbar links of `_quarto.yml` that point nowhere."
    import yaml
    cfg = yaml.safe_load(quarto_yml.read_text(encoding='utf-8')) or {}
    site = cfg.get('website', {})
    res = []
    def walk(items):
        for it in items or []:
            if isinstance(it, str): ref = it
            elif isinstance(it, dict):
                walk(it.get('contents'))
                ref = it.get('href') if isinstance(it.get('href'), str) else None
            else: ref = None
            if ref and not ref.startswith(('http:', 'https:')) and not (nbs_path/ref).exists():
                res.append(f'_quarto.yml sidebar: {ref} does not exist in {nbs_path.name}/')
    sb = site.get('sidebar', {})
    for s in (sb if isinstance(sb, list) else [sb]): walk(s.get('contents'))
    nav = site.get('navbar', {})
    for it in (nav.get('left') or []) + (nav.get('right') or []):
        href = it.get('href', '') if isinstance(it, dict) else ''
        if href.endswith('.html') and not href.startswith(('http:', 'https:')) and href not in pages:
            res.append(f'_quarto.yml navbar: {href} is not a page of the site')
    return res

# --------------------------------------------------------------------------- stored show_doc outputs

_re_exp = re.compile(r'^\s*#\|\s*default_exp\s+(\S+)', re.MULTILINE)
_re_fence = re.compile(r'```python\n(.*?)\n```', re.DOTALL)
_re_heading = re.compile(r'^(#+)[ \t]+(.+?)[ \t]*$', re.MULTILINE)

def default_exp(nb):
    "The module a notebook exports to (its `#| default_exp` name), or None."
    for cell in nb.cells:
        if cell.cell_type == 'code' and (m := _re_exp.search(cell.source)): return m.group(1)
    return None

def _code(src):
    "A code cell's source without `#|` directives and magics."
    return '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('#|', '%', '!')))

def showdoc_call(cell):
    "The `ast.Call` when the code cell `cell` is a single `show_doc(...)` call, else None."
    if cell.cell_type != 'code': return None
    try: tree = ast.parse(_code(cell.source))
    except SyntaxError: return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr): return None
    call = tree.body[0].value
    ok = isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'show_doc' and call.args
    return call if ok else None

def _split_showdoc(md):
    "(heading, signature, rest) of `show_doc`'s markdown: the `### name` line, the python block, what follows it."
    fence = _re_fence.search(md)
    head = _re_heading.search(md, 0, fence.start() if fence else len(md))
    sig = '\n'.join(l.rstrip() for l in fence.group(1).splitlines()) if fence else None
    rest = '\n'.join(l.rstrip() for l in md[fence.end():].strip().splitlines()) if fence else md.strip()
    return (head.group(2) if head else None), sig, rest

def _strip_comment(line):
    "(code, comment) of a signature line: docments put each parameter's comment after `#`."
    quote = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote: quote = None
        elif ch in '\'"': quote = ch
        elif ch == '#': return line[:k], line[k + 1:].strip()
    return line, ''

def _split_top(s, sep=','):
    "`s` split at `sep` outside brackets and quotes."
    items, cur, depth, quote = [], '', 0, None
    for ch in s:
        if quote:
            if ch == quote: quote = None
        elif ch in '\'"': quote = ch
        elif ch in '([{': depth += 1
        elif ch in ')]}': depth -= 1
        elif ch == sep and depth == 0:
            items.append(cur)
            cur = ''
            continue
        cur += ch
    return [i.strip() for i in items + [cur] if i.strip()]

def _sig_parts(sig):
    "(start, parameters, end, comments) of a signature that `show_doc` wrote, e.g. ('def f', ['x:int=1'], '->int:', [...])."
    code, comments = zip(*(_strip_comment(l) for l in sig.splitlines())) if sig.strip() else ((), ())
    flat = ' '.join(' '.join(code).split())
    i, depth = flat.find('('), 0
    if i < 0: return flat, [], '', [c for c in comments if c]
    for j in range(i, len(flat)):
        depth += {'(': 1, ')': -1}.get(flat[j], 0)
        if depth == 0: break
    return flat[:i].strip(), _split_top(flat[i + 1:j]), flat[j + 1:].strip(), [c for c in comments if c]

def _short(s, n=100): return s if len(s) <= n else s[:n - 3] + '...'

def _sig_diff(old, new):
    "What changed between two signatures, in words: parameters added and removed, return type, comments."
    import difflib
    (h0, p0, r0, c0), (h1, p1, r1, c1) = _sig_parts(old), _sig_parts(new)
    fmt = lambda xs: ', '.join(f'`{_short(x, 80)}`' for x in xs[:6]) + (f' (+{len(xs) - 6} more)' if len(xs) > 6 else '')
    parts = []
    if h0 != h1: parts.append(f'`{_short(h1, 60)}(` instead of `{_short(h0, 60)}(`')
    removed, added = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, p0, p1, autojunk=False).get_opcodes():
        if op in ('replace', 'delete'): removed += p0[i1:i2]
        if op in ('replace', 'insert'): added += p1[j1:j2]
    if added: parts.append(f'now has {fmt(added)}')
    if removed: parts.append(f'the stored output has {fmt(removed)}')
    if r0 != r1: parts.append(f'ends `{_short(r1, 60)}` instead of `{_short(r0, 60)}`')
    if not parts and c0 != c1:
        parts.append(f'the parameters\' comments (docments) differ: now {len(c1)} comments'
                     + (f', first "{_short(c1[0], 60)}"' if c1 else '') + f'; stored {len(c0)}')
    return '; '.join(parts) or 'line breaks differ'

def _first_diff(a, b, width=60):
    "The two texts around where they first differ."
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(0, i - 20)
    cut = lambda s: ('...' if lo else '') + s[lo:lo + width].replace('\n', ' ') + ('...' if len(s) > lo + width else '')
    return cut(a), cut(b)

def _notebook_imports(nb):
    "The import statements of the notebook's code cells, as (source, ast.Module) pairs."
    res = []
    for cell in nb.cells:
        if cell.cell_type != 'code': continue
        try: tree = ast.parse(_code(cell.source))
        except SyntaxError: continue
        res += [ast.Module([node], []) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return res

def showdoc_namespace(nb, lib_name):
    "What `show_doc(X)` cells see: the notebook's module `lib_name.<default_exp>` (and, lazily, its imports)."
    import importlib
    exp = default_exp(nb)
    ns = {}
    if exp:
        ns.update(vars(importlib.import_module(f'{lib_name}.{exp}')))
    return ns, exp

def showdoc_problems(nb, lib_name):
    """Code cells of the source notebook `nb` that are a single `show_doc(X)` call whose stored output no longer
    matches what `show_doc(X)` renders now (signature, name or docstring): GitHub and Jupyter show the stored output."""
    from nbdev.showdoc import show_doc
    calls = [(i, cell, c) for i, cell in enumerate(nb.cells) if (c := showdoc_call(cell)) is not None]
    if not calls: return []
    try: ns, exp = showdoc_namespace(nb, lib_name)
    except Exception as e:
        return [f'show_doc outputs not checked: cannot import the notebook\'s module: {type(e).__name__}: {e}']
    imports_done, res, missing = False, [], []
    fix = 're-execute the notebook (GitHub and Jupyter show the stored output)'
    for i, cell, call in calls:
        expr = ast.unparse(call)
        while True:
            try:
                r = eval(compile(ast.Expression(call), f'<cell {i}>', 'eval'), dict(ns, show_doc=show_doc))
                break
            except NameError as e:
                if imports_done:
                    r = e
                    break
                for mod in _notebook_imports(nb):  # names the notebook imports from elsewhere
                    try: exec(compile(mod, '<imports>', 'exec'), ns)
                    except Exception: pass
                imports_done = True
            except Exception as e:
                r = e
                break
        if isinstance(r, Exception):
            res.append(f'cell {i}: cannot render {expr} now: {type(r).__name__}: {r}')
            continue
        now = r._repr_markdown_() if hasattr(r, '_repr_markdown_') else None
        if now is None: continue
        stored = [o for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
        if not stored:
            missing.append((i, expr))
            continue
        md = stored[0].data['text/markdown']
        old_h, old_sig, old_rest = _split_showdoc(''.join(md) if isinstance(md, list) else md)
        new_h, new_sig, new_rest = _split_showdoc(now)
        stale = []
        if old_sig != new_sig:
            stale.append('an old signature: ' + (_sig_diff(old_sig, new_sig) if old_sig and new_sig
                                                 else f'stored {old_sig!r}, now {new_sig!r}'))
        elif old_h != new_h: stale.append(f'an old title: {old_h!r}, now {new_h!r}')
        if old_rest != new_rest:
            a, b = _first_diff(old_rest, new_rest)
            stale.append(f'an old docstring: stored "{a}", now "{b}"')
        if stale: res.append(f'cell {i}: the stored output of {expr} shows ' + '; and '.join(stale) + f': {fix}')
    if len(missing) == 1: res.append(f'cell {missing[0][0]}: {missing[0][1]} has no stored output: {fix}')
    elif missing:
        res.append(f'{len(missing)} show_doc cells have no stored output (cells '
                   + ', '.join(f'{i}: {_short(e, 60)}' for i, e in missing) + f'): {fix}')
    return res

# --------------------------------------------------------------------------- markdown source: tables and links

_re_fence_line = re.compile(r'^\s{0,3}(`{3,}|~{3,})')
_re_table_sep = re.compile(r'^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$')

def _prose_lines(src):
    "(line number, line) of a markdown source outside fenced code blocks."
    fence = None
    for k, line in enumerate(src.splitlines()):
        m = _re_fence_line.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        yield k, line

def _code_spans(line):
    "(start, end) of the inline code spans of a line: a run of backticks up to the next run of the same length."
    spans, i = [], 0
    while (i := line.find('`', i)) >= 0:
        j = i
        while j < len(line) and line[j] == '`': j += 1
        tick = line[i:j]
        m = re.compile(rf'(?<!`){tick}(?!`)').search(line, j)
        if not m:
            i = j
            continue
        spans.append((i, m.end()))
        i = m.end()
    return spans

def _without_code(line, fill=' '):
    "The line with its inline code spans blanked out (same length)."
    for a, b in _code_spans(line): line = line[:a] + fill * (b - a) + line[b:]
    return line

def pipe_cells(line):
    """The cells of a pipe-table row the way Quarto's pandoc splits it: at every `|` not escaped as `\\|` and not inside
    an inline code span; a `|` inside `$...$` math does split the cell."""
    s = _without_code(line, '\0').strip()
    cuts, i = [], 0
    while i < len(s):
        if s[i] == '\\': i += 2; continue
        if s[i] == '|': cuts.append(i)
        i += 1
    if cuts and cuts[0] == 0: cuts, s0 = cuts[1:], 1
    else: s0 = 0
    end = len(s)
    if cuts and cuts[-1] == len(s) - 1: cuts, end = cuts[:-1], len(s) - 1
    bounds = [s0 - 1] + cuts + [end]
    return [line.strip()[bounds[k] + 1:bounds[k + 1]].strip() for k in range(len(bounds) - 1)]

def _math_with_bar(line):
    "Inline math spans `$...$` of a line that hold an unescaped `|`."
    line = _without_code(line)
    return [m.group(0) for m in re.finditer(r'(?<![\\$])\$(?!\$)([^$]+?)(?<!\\)\$', line)
            if re.search(r'(?<!\\)\|', m.group(1))]

_re_row_like = re.compile(r'^\s*\|.*\|\s*$')

def pipe_table_problems(src):
    """Rows of the pipe tables in markdown `src` whose cell count differs from their header's (as Quarto's pandoc counts
    them), and table-like lines (`| a | b |`) that belong to no table (after a blank line, or with no separator line
    under a header): both show as raw text on the page."""
    res, lines, in_table = [], list(_prose_lines(src)), set()
    k = 1
    while k < len(lines):
        (hk, head), (sk, sep) = lines[k - 1], lines[k]
        if '|' not in sep or not _re_table_sep.match(sep) or not head.strip() or sk != hk + 1:
            k += 1
            continue
        n = len(pipe_cells(head))
        rows = [(sk, sep)]
        j = k + 1
        while j < len(lines) and lines[j][0] == lines[j - 1][0] + 1 and lines[j][1].strip() and '|' in lines[j][1]:
            rows.append(lines[j])
            j += 1
        in_table.update([hk] + [lk for lk, _ in rows])
        for lk, row in rows:
            m = len(pipe_cells(row))
            if m == n: continue
            what = 'separator line' if lk == sk else 'row'
            msg = f'line {lk + 1}: table {what} has {m} cells, its header {n} (pandoc, Quarto\'s renderer, counts every `|`)'
            if maths := _math_with_bar(row):
                msg += (f': the `|` in {", ".join(_short(x, 40) for x in maths[:3])} splits the cell: write '
                        r'`\vert` (`\lvert ... \rvert` for |x|; `\|` is a double bar in TeX)')
            res.append(f'{msg}: {_short(row.strip(), 120)}')
        k = j + 1
    orphans = [(lk, l) for lk, l in lines if lk not in in_table and _re_row_like.match(l) and len(pipe_cells(l)) > 1]
    groups = []
    for lk, l in orphans:
        if groups and lk == groups[-1][-1][0] + 1: groups[-1].append((lk, l))
        else: groups.append([(lk, l)])
    for g in groups:
        (lk, l), more = g[0], (f' (and {len(g) - 1} more lines)' if len(g) > 1 else '')
        res.append(f'line {lk + 1}: table row outside any table{more}, shown as raw text (a blank line inside the table, '
                   f'or no `|---|` line under its header?): {_short(l.strip(), 120)}')
    return res

_re_md_link = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:"[^"]*"|\'[^\']*\'))?\s*\)')
_re_ref_link = re.compile(r'^\s{0,3}\[(?!\^)[^\]]+\]:\s*<?([^\s>]+)>?(?:\s|$)')
_re_html_link = re.compile(r'<(?:a|img|source|video)\b[^>]*?\s(?:href|src)\s*=\s*["\']([^"\']+)["\']', re.IGNORECASE)
_re_scheme = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')

def markdown_links(src):
    "(line number, target) of the links and images of markdown `src`, outside code."
    res = []
    for k, line in _prose_lines(src):
        line = _without_code(line)
        for rx in (_re_md_link, _re_ref_link, _re_html_link):
            res += [(k, m.group(1)) for m in rx.finditer(line)]
    return res

def link_problems(src, nb_dir, root, nbs_path, site_pages):
    """Links of markdown `src` (a cell of a notebook in folder `nb_dir`) that break somewhere: links to `.html` pages of
    the site (they break on GitHub and in Jupyter: link the `.ipynb`, which Quarto rewrites), links to notebooks or
    files that do not exist. `site_pages` maps the site's pages (`train.html`, relative to `nbs_path`) to notebooks."""
    from urllib.parse import unquote
    from nbdev.doclinks import _nbpath2html
    res = []
    by_page = {Path(os.path.normpath(nbs_path/p)): nb for p, nb in site_pages.items()}
    rel = lambda p: os.path.relpath(p, nb_dir).replace(os.sep, '/')
    for k, target in markdown_links(src):
        if _re_scheme.match(target) or target.startswith(('#', '//', '/')): continue
        path = unquote(target.split('#')[0].split('?')[0])
        anchor = '#' + target.split('#', 1)[1] if '#' in target else ''
        if not path: continue
        full = Path(os.path.normpath(nb_dir/path))
        where = f'line {k + 1}: '
        if path.endswith('.html') and not full.is_file():
            nb = by_page.get(full)
            if nb: res.append(f'{where}link to the site page ({target}): it breaks on GitHub and in Jupyter; '
                              f'link the notebook instead: ({rel(nb)}{anchor})')
            else: res.append(f'{where}link to ({target}), which is not a page of the site (no notebook makes it), '
                             'and .html links break on GitHub and in Jupyter: link a notebook, (X.ipynb)')
        elif path.endswith('.ipynb') and not full.is_file():
            same = by_page.get(nbs_path/_nbpath2html(full.relative_to(nbs_path))) if full.is_relative_to(nbs_path) else None
            res.append(f'{where}link to a notebook that does not exist: {target}'
                       + (f' (renamed? {rel(same)} makes the same page: ({rel(same)}{anchor}))' if same else ''))
        elif not full.exists():
            res.append(f'{where}link to a file that does not exist: {target}')
        elif not full.is_relative_to(root):
            res.append(f'{where}link to a file outside the repository: {target}')
    return res

def markdown_problems(nb, nb_path, root, nbs_path, site_pages):
    "Broken pipe tables and links in the markdown cells of the source notebook `nb` (at `nb_path`)."
    res = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != 'markdown': continue
        res += [f'cell {i}, {p}' for p in pipe_table_problems(cell.source)]
        res += [f'cell {i}, {p}' for p in link_problems(cell.source, Path(nb_path).parent, root, nbs_path, site_pages)]
    return res

def site_pages_of(nbs_path):
    "Every page of the site (relative to `nbs_path`, posix) and the notebook that makes it."
    from nbdev.doclinks import _nbpath2html
    return {_nbpath2html(nb.relative_to(nbs_path)).as_posix(): nb for nb in find_notebooks(nbs_path, None)}

def results_table_problems(nbs):
    "Notebooks whose results table (between `<!-- results-table:start/end -->`) differs from headline.json."
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import results_table
    return results_table.check(nbs)

# --------------------------------------------------------------------------- HTML rendering

_re_dir = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_re_quarto_attrs = re.compile(r'\{target="_blank"[^}]*\}')

def _directives(src):
    "Split Quarto/nbdev `#|` directives off the top of a cell's source."
    lines, d = src.splitlines(), {}
    while lines and _re_dir.match(lines[0]):
        k, v = _re_dir.match(lines.pop(0)).groups()
        d[k] = v.strip('"\'')
    return d, '\n'.join(lines)

def quarto_like(nb):
    "Apply to processed notebook `nb` the bits of Quarto that change what a reader sees; return title."
    import yaml
    fm = {}
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.lstrip().startswith('---'):
        fm = yaml.safe_load(nb.cells.pop(0).source.strip().strip('-')) or {}
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'markdown': cell.source = ipynb_links_to_pages(cell.source)
        if cell.cell_type == 'code':
            d, cell.source = _directives(cell.source)
            if d.get('include') == 'false': continue
            if d.get('output') == 'false': cell.outputs = []
            if d.get('echo') == 'false': cell.metadata['transient'] = {'remove_source': True}  # honoured by nbconvert's templates
            for o in cell.outputs:  # show_doc's markdown carries Quarto link attributes nbconvert would print
                if 'text/markdown' in o.get('data', {}):
                    o.data['text/markdown'] = ipynb_links_to_pages(_re_quarto_attrs.sub('', o.data['text/markdown']))
            if not cell.source.strip() and not cell.outputs: continue
        cells.append(cell)
    title = str(fm.get('title', ''))
    head = f'# {title}' + (f'\n\n> {fm["description"]}' if fm.get('description') else '')
    if title: cells.insert(0, _md_cell(head))
    nb.cells = cells
    nb.metadata['title'] = title
    nb.metadata.pop('widgets', None)  # widget state needs a CDN; Quarto embeds it, we do not check it
    return title, fm.get('output-file')

def _md_cell(src):
    import nbformat
    return nbformat.v4.new_markdown_cell(src)

# Reports, once the page has loaded (and MathJax, when there is one, has typeset it), what a reader
# would notice; `--dump-dom` then prints it. TeX errors are made loud: MathJax's noErrors and
# noUndefined extensions would otherwise show bad TeX quietly.
PROBE = """<script>
window.__docsCheckErrors = [];
window.addEventListener('error', e => { if (e.message) window.__docsCheckErrors.push(e.message); });
window.MathJax = {TeX: {noErrors: {disabled: true}, noUndefined: {disabled: true}},
  AuthorInit: function () {
    MathJax.Hub.Register.MessageHook('TeX Jax - parse error', m => window.__docsCheckErrors.push('TeX: ' + m[1]));
    MathJax.Hub.Register.MessageHook('Math Processing Error', m => window.__docsCheckErrors.push(
      'MathJax: ' + m[2] + ' in ' + String((m[1] && (m[1].originalText || m[1].text || m[1].textContent)) || '?').slice(0, 80)));
  }};
function __docsCheckReport() {
  const imgs = Array.from(document.images);
  const r = {title: document.title,
    h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.replace(/\\u00b6/g, '').trim()),
    images: imgs.length,
    // images on other hosts (badges) cannot load offline: every host but this one is blocked
    broken: imgs.filter(i => !/^https?:/.test(i.getAttribute('src') || '') && !(i.complete && i.naturalWidth > 0))
                .map(i => (i.getAttribute('src') || '').slice(0, 80)),
    external: imgs.filter(i => /^https?:/.test(i.getAttribute('src') || '')).length,
    errors: window.__docsCheckErrors,
    mathjax: !!(window.MathJax && window.MathJax.Hub),
    math: document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML').length,
    height: document.documentElement.scrollHeight};
  const pre = document.createElement('pre');
  pre.id = 'docs-check-result'; pre.style.display = 'none'; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
}
window.addEventListener('load', () => {
  if (window.MathJax && window.MathJax.Hub) MathJax.Hub.Queue(__docsCheckReport); else __docsCheckReport();
});
</script>"""

MATHJAX_DIR = '_mathjax'  # where a local MathJax 2 is served from, when there is one

def local_mathjax(install):
    """The folder of MathJax 2 shipped by the `jupyter-server-mathjax` package (only its files are used, so it is
    installed without its Jupyter server dependencies); pip-install it when missing and `install`."""
    import importlib, importlib.util
    if importlib.util.find_spec('jupyter_server_mathjax') is None:
        if not install: return None
        print('check_docs: installing jupyter-server-mathjax (a local MathJax) with pip ...', flush=True)
        subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', 'jupyter-server-mathjax'], check=True)
        importlib.invalidate_caches()
    static = Path(importlib.util.find_spec('jupyter_server_mathjax').origin).parent/'static'
    return static if (static/'MathJax.js').exists() else None

def render_html(proc_nb_path, out_path, html_root, mathjax=False):
    "Render a processed notebook to `out_path`, with the local MathJax if `mathjax`; return (title, html)."
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(proc_nb_path, as_version=4)
    title, _ = quarto_like(nb)
    kw = {}
    if mathjax:
        up = '../' * (len(out_path.relative_to(html_root).parts) - 1)
        kw['mathjax_url'] = f'{up}{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe'
    body, _ = HTMLExporter(**kw).from_notebook_node(nb)
    body = body.replace('<head>', '<head>\n' + PROBE, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(body, encoding='utf-8')
    return title, body

def static_html_problems(body, title, out_path, html_root, site_url, site_pages=()):
    """Title present; local images and links to other pages of the site resolve (to a page in `site_pages`, every page
    of the site, or to a file under `html_root`); no markdown table left as raw text."""
    res = []
    if not title: res.append('no title: the first cell must be markdown `# Title`')
    for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', body):
        src = html.unescape(src)
        if src.startswith(('data:', 'http:', 'https:')): continue
        if not (out_path.parent/src.split('#')[0].split('?')[0]).exists(): res.append(f'image not found: {src}')
    for href in sorted(set(re.findall(r'<a[^>]*\shref="([^"#]+\.html(?:#[^"]*)?)"', body))):
        href, anchor = html.unescape(href).partition('#')[::2]
        if site_url and href.startswith(site_url): page = href[len(site_url):].lstrip('/')
        elif href.startswith(('http:', 'https:')): continue
        else: page = (out_path.parent/href).resolve().relative_to(html_root.resolve()).as_posix()
        if page not in site_pages and not (html_root/page).exists():
            res.append(f'link to a page that does not exist: {href}' + (f'#{anchor}' if anchor else ''))
    return res + raw_markdown_problems(body)

_re_ipynb_md = re.compile(r'(\]\(\s*<?)([^)\s>#?]+\.ipynb)(?=[#)\s>?])')
_re_ipynb_html = re.compile(r'(<a\b[^>]*?\shref\s*=\s*["\'])([^"\'#?]+\.ipynb)(?=["\'#?])', re.IGNORECASE)

def ipynb_links_to_pages(md):
    "Rewrite relative links to notebooks (`05_train.ipynb#x`) to their pages (`train.html#x`), as Quarto does."
    from nbdev.doclinks import _nbpath2html
    def sub(m):
        t = m.group(2)
        if _re_scheme.match(t) or t.startswith(('/', '//')): return m.group(0)
        return m.group(1) + _nbpath2html(Path(t)).as_posix()
    return _re_ipynb_html.sub(sub, _re_ipynb_md.sub(sub, md))

RAW_SKIP_TAGS = {'pre', 'code', 'script', 'style', 'textarea', 'svg', 'math'}
RAW_BLOCK_TAGS = {'p', 'div', 'br', 'li', 'ul', 'ol', 'tr', 'td', 'th', 'table', 'thead', 'tbody', 'blockquote',
                  'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'section', 'main', 'body', 'dd', 'dt', 'dl', 'details',
                  'summary', 'figure', 'figcaption', 'img'}
_re_raw_sep = re.compile(r'\|\s*:?-{3,}:?\s*(\||$)')

def page_text_lines(body):
    "The lines of text a reader sees on HTML page `body`, outside `<pre>`, `<code>`, scripts and styles."
    from html.parser import HTMLParser
    class P(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.skip, self.out = 0, []
        def handle_starttag(self, tag, attrs):
            if tag in RAW_SKIP_TAGS: self.skip += 1
            elif tag in RAW_BLOCK_TAGS: self.out.append('\n')
        def handle_startendtag(self, tag, attrs):
            if tag in RAW_BLOCK_TAGS: self.out.append('\n')
        def handle_endtag(self, tag):
            if tag in RAW_SKIP_TAGS: self.skip = max(0, self.skip - 1)
            elif tag in RAW_BLOCK_TAGS: self.out.append('\n')
        def handle_data(self, data):
            if not self.skip: self.out.append(data)
    p = P()
    p.feed(body)
    p.close()
    return [l.strip() for l in ''.join(p.out).splitlines()]

def raw_markdown_problems(body):
    "Markdown tables that did not render: separator lines (`|---|`) or `| ... |` rows left as text on the page."
    res, block = [], []
    def flush():
        if block:
            more = f' (and {len(block) - 1} more such lines)' if len(block) > 1 else ''
            res.append(f'raw markdown on the page (a table that did not render): "{_short(block[0], 120)}"{more}')
            block.clear()
    for line in page_text_lines(body):
        if line and (_re_raw_sep.search(line) or (line.startswith('| ') and line.endswith(' |'))): block.append(line)
        elif line: flush()
    flush()
    return res

# --------------------------------------------------------------------------- browser

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')

def find_browser(install):
    "Path to a Chromium-like browser; install Debian's `chromium` when missing and `install`."
    cands = [os.environ.get('CHROME_BIN')] + [shutil.which(b) for b in BROWSERS]
    found = next((c for c in cands if c and Path(c).exists()), None)
    if found or not install: return found
    if not shutil.which('apt-get'): sys.exit('check_docs: no Chromium found and no apt-get to install it')
    sudo = [] if os.geteuid() == 0 else ['sudo']
    print('check_docs: installing chromium with apt-get ...', flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for cmd in (['apt-get', 'update', '-qq'], ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'chromium']):
        subprocess.run(sudo + cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which('chromium')

class Server:
    "`python -m http.server` on 127.0.0.1 and a free port, serving `root`, as a context manager."
    def __init__(self, root): self.root = root
    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, '-u', '-m', 'http.server', '0', '--bind', '127.0.0.1',
                                      '--directory', str(self.root)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 40123 (...) ..."
        m = re.search(r'port (\d+)', line)
        if not m:
            self.proc.kill()
            sys.exit(f'check_docs: http.server did not start: {line!r}')
        self.url = f'http://127.0.0.1:{m.group(1)}/'
        return self
    def __exit__(self, *a):
        self.proc.terminate()
        self.proc.wait(10)

def chromium(browser, profile, *args, timeout=60):
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--disable-dev-shm-usage', '--hide-scrollbars', f'--user-data-dir={profile}',
             # every host but ours fails at once: the check must not depend on the network or CDNs
             '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1']
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=timeout)

def browser_problems(browser, url, title, shot, profile):
    "Load `url` in headless Chromium; check what the injected probe reports; save a screenshot."
    r = chromium(browser, profile, '--virtual-time-budget=10000', '--dump-dom', url)
    m = re.search(r'<pre id="docs-check-result"[^>]*>(.*?)</pre>', r.stdout, re.DOTALL)
    if not m: return [f'page did not load in Chromium (exit {r.returncode}): {r.stderr.strip()[-300:]}'], {}
    rep = json.loads(html.unescape(m.group(1)))
    res = []
    if rep['title'] != title: res.append(f'page title is {rep["title"]!r}, expected {title!r}')
    if title not in rep['h1']: res.append(f'no <h1> showing the title {title!r} (found {rep["h1"]})')
    res += [f'broken image: {s}' for s in rep['broken']]
    # TeX errors are failures; MathJax's own crashes are not: this MathJax 2 fails on some valid TeX (a prime in a
    # subscript, `k_{i'}`) that Quarto's MathJax 3 renders; require.js comes from a CDN, blocked here
    res += [e if e.startswith('TeX:') else f'JavaScript error: {e}'
            for e in rep['errors'] if 'require' not in e and not e.startswith('MathJax:')]
    height = max(600, min(int(rep['height']), 12000))
    shot.parent.mkdir(parents=True, exist_ok=True)
    r = chromium(browser, profile, f'--window-size=1280,{height}', f'--screenshot={shot}', url)
    if not shot.exists(): res.append(f'no screenshot (exit {r.returncode}): {r.stderr.strip()[-300:]}')
    return res, rep

# --------------------------------------------------------------------------- main

def find_notebooks(nbs_path, only):
    if only: return [Path(o).resolve() for o in only]
    return sorted(p.resolve() for p in nbs_path.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) or part in SKIP_PARTS
                             for part in p.relative_to(nbs_path).parts))

def copy_assets(nbs_path, html_root):
    "Copy what pages may reference (images, css) next to the HTML, as Quarto would."
    for p in nbs_path.rglob('*'):
        rel = p.relative_to(nbs_path)
        if (p.is_file() and p.suffix not in ('.ipynb', '.py', '.yml')
                and not any(s.startswith(('_', '.')) or s in SKIP_PARTS for s in rel.parts)):
            (html_root/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, html_root/rel)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--browser', action='store_true', help='require the browser check (installs chromium if missing)')
    g.add_argument('--no-browser', action='store_true', help='skip the browser check')
    ap.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1), help='processes for nbdev processing')
    ap.add_argument('notebooks', nargs='*', help='notebooks to check (default: every notebook in nbs/)')
    args = ap.parse_args(argv)
    args.notebooks = [Path(o).resolve() for o in args.notebooks]  # relative to where we were called from
    t0 = time.time()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import nbformat
    from nbdev.config import get_config
    from nbdev.doclinks import _nbpath2html
    cfg = get_config()
    nbs_path, site_url = cfg.nbs_path.resolve(), f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/')

    nbs = find_notebooks(nbs_path, args.notebooks)
    if not nbs: sys.exit(f'check_docs: no notebooks found in {nbs_path}')
    fails = {nb: [] for nb in nbs}
    pages = {nb: _nbpath2html(nb.relative_to(nbs_path)).as_posix() for nb in nbs}
    site_pages = site_pages_of(nbs_path)  # every page, also when only some notebooks are checked

    tmp = Path(tempfile.mkdtemp(prefix='check_docs_'))
    try:
        proc_path, html_root = tmp/'proc', tmp/'html'
        for nb, probs in process_all(nbs, nbs_path, proc_path, args.workers).items(): fails[nb] += probs
        t_proc = time.time()
        proc_nbs = {}
        for nb in nbs:
            src_nb = nbformat.read(nb, as_version=4)
            fails[nb] += output_problems(src_nb)
            fails[nb] += showdoc_problems(src_nb, cfg.lib_path.name)
            fails[nb] += markdown_problems(src_nb, nb, ROOT, nbs_path, site_pages)
            pnb = proc_path/nb.relative_to(nbs_path)
            if pnb.exists(): proc_nbs[nb] = nbformat.read(pnb, as_version=4)
        exp_fails, notes = export_problems(cfg.lib_path.resolve(), cfg.lib_path.name, proc_nbs)
        for nb, probs in exp_fails.items(): fails[nb] += probs
        for nb, msg in results_table_problems(nbs): fails[nb].append(msg)
        general = []
        if (nbs_path/'_quarto.yml').exists() and not args.notebooks:
            general = sidebar_problems(nbs_path/'_quarto.yml', nbs_path, set(pages.values()))

        copy_assets(nbs_path, html_root)
        browser, mathjax = None, None
        if not args.no_browser:
            install = args.browser or bool(os.environ.get('CI'))
            browser = find_browser(install)
            if browser is None:
                print('check_docs: no Chromium found: browser check skipped '
                      '(--browser installs it; --no-browser silences this)')
            else:
                mathjax = local_mathjax(install)
                if mathjax is None: print('check_docs: no local MathJax: TeX is not checked (pip install jupyter-server-mathjax)')
                else: (html_root/MATHJAX_DIR).symlink_to(mathjax, target_is_directory=True)
        titles, bodies = {}, {}
        for nb in proc_nbs:
            titles[nb], bodies[nb] = render_html(proc_path/nb.relative_to(nbs_path), html_root/pages[nb], html_root, bool(mathjax))
        for nb in proc_nbs:  # once every page exists, so that links between pages can be checked
            fails[nb] += static_html_problems(bodies[nb], titles[nb], html_root/pages[nb], html_root, site_url, set(site_pages))
        t_html = time.time()

        n_images, n_math, t_browser = 0, 0, None
        if browser:
            shutil.rmtree(SHOTS, ignore_errors=True)
            with Server(html_root) as srv, cf.ThreadPoolExecutor(args.workers) as ex:
                futs = {nb: ex.submit(browser_problems, browser, srv.url + pages[nb], titles[nb],
                                      SHOTS/Path(pages[nb]).with_suffix('.png'), tmp/f'profile{i}')
                        for i, nb in enumerate(titles)}
                for nb, f in futs.items():
                    try: probs, rep = f.result()
                    except Exception as e: probs, rep = [f'browser check crashed: {type(e).__name__}: {e}'], {}
                    fails[nb] += probs
                    n_images += rep.get('images', 0)
                    n_math += rep.get('math', 0)
                    if mathjax and rep and not rep.get('mathjax'): fails[nb].append('MathJax did not load')
            t_browser = time.time()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for nb, ns in notes.items():
        for msg in ns: print(f'note {nb.relative_to(ROOT) if nb.is_relative_to(ROOT) else nb}: {msg}')
    n_failed = sum(bool(p) for p in fails.values())
    for msg in general: print(f'FAIL {msg}')
    for nb, probs in fails.items():
        rel = nb.relative_to(ROOT) if nb.is_relative_to(ROOT) else nb
        if probs:
            print(f'FAIL {rel}')
            for p in probs: print(f'  - {p}')
    how = 'no browser'
    if browser:
        how = (f'browser: {browser}, {n_images} images, ' + (f'{n_math} formulas' if mathjax else 'TeX not checked')
               + f', screenshots in {SHOTS.relative_to(ROOT)}/')
    phases = f'nbdev processing {t_proc - t0:.0f} s, checks+HTML {t_html - t_proc:.0f} s'
    if t_browser: phases += f', browser {t_browser - t_html:.0f} s'
    print(f'check_docs: {phases}')
    site = f', {len(general)} _quarto.yml problems' if general else ''
    print(f'docs check: {len(nbs)} pages, {n_failed} failed{site} ({how}; {time.time() - t0:.0f} s)')
    return 1 if n_failed or general else 0

if __name__ == '__main__': sys.exit(main())
