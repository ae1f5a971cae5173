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
3. every function and class in each module's `__all__` must have a docstring and a `show_doc` cell in
   its notebook, written by hand or added by nbdev's `add_show_docs`; no name may be exported by two
   modules (nbdev's doc links would pick one); constants never mentioned in the prose are notes;
4. `_quarto.yml`'s sidebar and navbar must point at notebooks/pages that exist;
5. each processed notebook is rendered to HTML with nbconvert (with the Quarto directives nbdev
   relies on applied: title from the front matter, `echo: false`, `include: false`, `output: false`),
   and checked statically: title, local images and links to other pages of the site exist;
6. browser check (skip with `--no-browser`): the HTML folder is served on 127.0.0.1 by
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
        if cell.cell_type == 'code':
            d, cell.source = _directives(cell.source)
            if d.get('include') == 'false': continue
            if d.get('output') == 'false': cell.outputs = []
            if d.get('echo') == 'false': cell.metadata['transient'] = {'remove_source': True}  # honoured by nbconvert's templates
            for o in cell.outputs:  # show_doc's markdown carries Quarto link attributes nbconvert would print
                if 'text/markdown' in o.get('data', {}):
                    o.data['text/markdown'] = _re_quarto_attrs.sub('', o.data['text/markdown'])
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

def static_html_problems(body, title, out_path, html_root, site_url):
    "Title present; local images and links to other pages of the site resolve."
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
        if not (html_root/page).exists():
            res.append(f'link to a page that does not exist: {href}' + (f'#{anchor}' if anchor else ''))
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

    tmp = Path(tempfile.mkdtemp(prefix='check_docs_'))
    try:
        proc_path, html_root = tmp/'proc', tmp/'html'
        for nb, probs in process_all(nbs, nbs_path, proc_path, args.workers).items(): fails[nb] += probs
        t_proc = time.time()
        proc_nbs = {}
        for nb in nbs:
            fails[nb] += output_problems(nbformat.read(nb, as_version=4))
            pnb = proc_path/nb.relative_to(nbs_path)
            if pnb.exists(): proc_nbs[nb] = nbformat.read(pnb, as_version=4)
        exp_fails, notes = export_problems(cfg.lib_path.resolve(), cfg.lib_path.name, proc_nbs)
        for nb, probs in exp_fails.items(): fails[nb] += probs
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
            fails[nb] += static_html_problems(bodies[nb], titles[nb], html_root/pages[nb], html_root, site_url)
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
