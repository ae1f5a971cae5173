"""The documentation tools (tools/check_docs.py, tools/results_table.py, tools/make_readme.py) on small, purpose-made
notebooks in a temporary folder: each check reports the bad version and passes the clean one. No browser, no Quarto."""
import importlib, json, sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import check_docs as cd          # noqa: E402
import make_readme               # noqa: E402
import results_table as rt       # noqa: E402


def _nb(*cells):
    "A notebook of ('md' | 'code', source[, outputs]) cells."
    nb = nbformat.v4.new_notebook()
    for c in cells:
        kind, src, outs = (c + (None,))[:3]
        if kind == 'md': nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(src)
            cell.outputs = outs or []
            nb.cells.append(cell)
    return nb


def _write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# --------------------------------------------------------------------------- stale show_doc outputs

LIB = 'docs_tools_fakelib'
MOD_OLD = '''
def segment(model, images, batch_size:int=64, amp_dtype=None):
    "Masks of `images`."

class Trainer:
    "Trains."
    def fit(self, iters:int=10):
        "Train for `iters` iterations."
'''
MOD_NEW = '''
def segment(model, images, batch_size:int=64, amp:str='auto', compile:bool=False):
    "Masks of `images`."

class Trainer:
    "Trains."
    def fit(self, iters:int=10, minutes:float=None):
        "Train for `iters` iterations."
'''


def _fake_module(tmp_path, monkeypatch, src):
    "Make `docs_tools_fakelib.core` with source `src` importable (fresh)."
    pkg = tmp_path/'lib'/LIB
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg/'__init__.py').write_text('')
    (pkg/'core.py').write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path/'lib'))
    for m in [m for m in sys.modules if m.startswith(LIB)]: del sys.modules[m]
    importlib.invalidate_caches()
    return importlib.import_module(f'{LIB}.core')


def _showdoc_output(obj):
    "The output cell Jupyter stores for `show_doc(obj)`."
    from nbdev.showdoc import show_doc
    r = show_doc(obj)
    return [nbformat.v4.new_output('execute_result', {'text/markdown': r._repr_markdown_(), 'text/plain': repr(r)},
                                   execution_count=1)]


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # nbdev's show_doc reads settings.ini from the working directory


def test_stale_show_doc_is_reported_and_fresh_one_passes(tmp_path, monkeypatch, in_root):
    old = _fake_module(tmp_path, monkeypatch, MOD_OLD)
    stored_seg, stored_fit = _showdoc_output(old.segment), _showdoc_output(old.Trainer.fit)
    nb = _nb(('code', '#| default_exp core'), ('md', '# Core'),
             ('code', 'show_doc(segment)', stored_seg), ('code', '#| hide\nshow_doc(Trainer.fit)', stored_fit))
    assert cd.showdoc_problems(nb, LIB) == []          # outputs made by the code they document

    _fake_module(tmp_path, monkeypatch, MOD_NEW)       # the code changes, the stored outputs do not
    probs = cd.showdoc_problems(nb, LIB)
    assert len(probs) == 2, probs
    seg, fit = probs
    assert seg.startswith('cell 2: the stored output of show_doc(segment) shows an old signature')
    assert "amp:str='auto'" in seg and 'amp_dtype:NoneType=None' in seg and 'compile:bool=False' in seg
    assert 're-execute the notebook' in seg
    assert fit.startswith('cell 3: ') and 'show_doc(Trainer.fit)' in fit and 'minutes:float=None' in fit


def test_show_doc_without_output_or_with_old_docstring(tmp_path, monkeypatch, in_root):
    mod = _fake_module(tmp_path, monkeypatch, MOD_NEW)
    out = _showdoc_output(mod.segment)
    out[0].data['text/markdown'] = out[0].data['text/markdown'].replace('Masks of', 'Old masks of')
    nb = _nb(('code', '#| default_exp core'), ('code', 'show_doc(segment)', out), ('code', 'show_doc(Trainer)'),
             ('code', 'x = 1\nshow_doc(segment)'))     # not a single show_doc call: not checked
    probs = cd.showdoc_problems(nb, LIB)
    assert len(probs) == 2, probs
    assert probs[0].startswith('cell 1: ') and 'old docstring' in probs[0] and 'Old masks of' in probs[0]
    assert probs[1].startswith('cell 2: ') and 'no stored output' in probs[1]


def test_show_doc_of_an_unknown_name_is_reported(tmp_path, monkeypatch, in_root):
    _fake_module(tmp_path, monkeypatch, MOD_NEW)
    probs = cd.showdoc_problems(_nb(('code', '#| default_exp core'), ('code', 'show_doc(missing)')), LIB)
    assert len(probs) == 1 and 'cannot render show_doc(missing)' in probs[0] and 'NameError' in probs[0]


# --------------------------------------------------------------------------- tables

BROKEN_TABLE = r'''Presets:

| setting | `cpu` | `paper` |
|---|---|---|
| `lambda_z_scale` | 20 | $\lambda_z = 20/(n\,|\mathbf z|)$ |
| `delta` | `'separate'` | `'shared'` |
'''
CLEAN_TABLE = BROKEN_TABLE.replace(r'|\mathbf z|', r'\lvert\mathbf z\rvert')


def test_pipe_table_cells_are_counted_like_pandoc():
    assert cd.pipe_cells('| a | b |') == ['a', 'b']
    assert cd.pipe_cells('a | b') == ['a', 'b']
    assert cd.pipe_cells(r'| $n|\mathbf z|$ | x |') == ['$n', r'\mathbf z', '$', 'x']   # math does not protect a |
    assert cd.pipe_cells(r'| $\|\delta\|^2$ | x |') == [r'$\|\delta\|^2$', 'x']         # an escaped one is text
    assert cd.pipe_cells('| `a|b` | x |') == ['`a|b`', 'x']                             # code spans protect it


def test_table_with_a_bar_in_math_is_reported_and_escaped_one_passes():
    probs = cd.pipe_table_problems(BROKEN_TABLE)
    assert len(probs) == 1, probs
    assert probs[0].startswith('line 5: table row has 5 cells, its header 3')
    assert r'$\lambda_z = 20/(n\,|\mathbf z|)$' in probs[0] and r'\vert' in probs[0]
    assert cd.pipe_table_problems(CLEAN_TABLE) == []
    # a table inside a fenced code block is not a table
    assert cd.pipe_table_problems('```\n| a | b |\n|---|---|\n| 1 | 2 | 3 |\n```\n') == []
    # a separator line with a different number of cells makes no table at all
    assert 'separator line has 2 cells' in cd.pipe_table_problems('| a | b | c |\n|---|---|\n| 1 | 2 | 3 |\n')[0]


def _render(tmp_path, nb):
    path = _write(nb, tmp_path/'proc'/'05_train.ipynb')
    title, body = cd.render_html(path, tmp_path/'html'/'train.html', tmp_path/'html')
    return title, body


def test_raw_markdown_table_on_the_rendered_page_is_reported(tmp_path):
    _, body = _render(tmp_path, _nb(('md', '# Training'), ('md', BROKEN_TABLE)))
    probs = cd.raw_markdown_problems(body)
    assert len(probs) == 1 and probs[0].startswith('raw markdown on the page') and '| setting |' in probs[0], probs
    _, body = _render(tmp_path, _nb(('md', '# Training'), ('md', CLEAN_TABLE)))
    assert '<table>' in body and cd.raw_markdown_problems(body) == []


def test_bar_in_code_span_breaks_the_table_in_jupyter_and_is_caught_on_the_page(tmp_path):
    "pandoc keeps `a|b` in one cell; nbconvert's mistune (like GitHub and Jupyter) splits it: the page check sees it."
    md = '| a | b |\n|---|---|\n| `x|y` | 2 |\n'
    assert cd.pipe_table_problems(md) == []
    _, body = _render(tmp_path, _nb(('md', '# Training'), ('md', md)))
    assert cd.raw_markdown_problems(body) != []


def test_raw_markdown_check_ignores_code_and_preformatted_text():
    body = ('<html><body><pre>| a | b |\n|---|---|</pre><p>text with <code>| a |</code> inside</p>'
            '<div><code>|---|---|</code></div><p>a | b</p></body></html>')
    assert cd.raw_markdown_problems(body) == []
    assert cd.raw_markdown_problems('<p>| a | b |\n|:--|--:|</p>') != []
    assert cd.raw_markdown_problems('<p>| --- | --- |</p>') != []


# --------------------------------------------------------------------------- links

@pytest.fixture
def site(tmp_path):
    "A repository with nbs/00_intro.ipynb, nbs/05_train.ipynb, nbs/10_refine.ipynb and benchmarks/RESULTS.md."
    root = tmp_path/'repo'
    for name in ('00_intro', '05_train', '10_refine'): _write(_nb(('md', f'# {name}')), root/'nbs'/f'{name}.ipynb')
    (root/'benchmarks').mkdir()
    (root/'benchmarks'/'RESULTS.md').write_text('# results\n')
    (root/'nbs'/'images').mkdir()
    (root/'nbs'/'images'/'fig.png').write_bytes(b'png')
    return root


def _link_problems(root, md):
    nbs = root/'nbs'
    nb = _nb(('md', '# Intro'), ('md', md))
    return cd.markdown_problems(nb, nbs/'00_intro.ipynb', root, nbs, cd.site_pages_of(nbs))


def test_site_pages_are_named_like_nbdev(site):
    assert set(cd.site_pages_of(site/'nbs')) == {'intro.html', 'train.html', 'refine.html'}


def test_clean_links_pass(site):
    md = ('See [Training](05_train.ipynb), [its presets](05_train.ipynb#presets), [this page](#top), '
          '[the log](../benchmarks/RESULTS.md), ![fig](images/fig.png), <img src="images/fig.png">, '
          '[docs](https://redo-nb.github.io/redo-nb/train.html), `[not a link](x.html)` and\n\n'
          '```\n[in code](gone.html)\n```\n')
    assert _link_problems(site, md) == []


def test_link_to_an_html_page_is_reported_with_the_notebook_to_link(site):
    probs = _link_problems(site, 'Text.\n\nSee [Training](train.html#presets) and [old](beyond.html).')
    assert len(probs) == 2, probs
    assert probs[0].startswith('cell 1, line 3: link to the site page (train.html#presets)')
    assert 'link the notebook instead: (05_train.ipynb#presets)' in probs[0]
    assert 'beyond.html' in probs[1] and 'not a page of the site' in probs[1]


def test_links_to_missing_files_and_notebooks_are_reported(site):
    probs = _link_problems(site, '[log](../benchmarks/NOPE.md), [refine](02a_refine.ipynb#x), ![](images/none.png)')
    assert len(probs) == 3, probs
    assert 'file that does not exist: ../benchmarks/NOPE.md' in probs[0]
    assert 'notebook that does not exist: 02a_refine.ipynb#x' in probs[1] and '(10_refine.ipynb#x)' in probs[1]
    assert 'file that does not exist: images/none.png' in probs[2]


def test_ipynb_links_become_pages_in_html(tmp_path):
    assert cd.ipynb_links_to_pages('[T](05_train.ipynb#a) [R](10_refine.ipynb) <a href="00_intro.ipynb">i</a>') == \
        '[T](train.html#a) [R](refine.html) <a href="intro.html">i</a>'
    assert cd.ipynb_links_to_pages('[x](https://github.com/a/b/blob/main/nbs/05_train.ipynb)') == \
        '[x](https://github.com/a/b/blob/main/nbs/05_train.ipynb)'
    _, body = _render(tmp_path, _nb(('md', '# Training'), ('md', 'See [refinement](10_refine.ipynb#start).')))
    assert 'href="refine.html#start"' in body and '.ipynb' not in body.split('<body', 1)[1]
    html_root = tmp_path/'html'
    ok = cd.static_html_problems(body, 'Training', html_root/'train.html', html_root, '', {'train.html', 'refine.html'})
    assert ok == []
    bad = cd.static_html_problems(body, 'Training', html_root/'train.html', html_root, '', {'train.html'})
    assert bad == ['link to a page that does not exist: refine.html#start']


def test_readme_links_are_rebased_to_the_top_level():
    md = ('[T](05_train.ipynb#x) ![](images/a.png) [R](../benchmarks/RESULTS.md) [U](https://x.org/a.ipynb) '
          '[A](#results) <a href="01_redraw.ipynb">r</a> ![](nbs/images/b.png)')
    assert make_readme._fix_links(md) == (
        '[T](nbs/05_train.ipynb#x) ![](nbs/images/a.png) [R](benchmarks/RESULTS.md) [U](https://x.org/a.ipynb) '
        '[A](#results) <a href="nbs/01_redraw.ipynb">r</a> ![](nbs/images/b.png)')


# --------------------------------------------------------------------------- results table

def _row(**kw):
    row = {'data': 'built-in synthetic, 32 px', 'scored_on': '256 validation images', 'preset': 'cpu',
           'command': 'redo_train', 'budget_minutes': 10, 'minutes': 10.0, 'iterations': 2409,
           'f_iou': {'per_image': 0.858, 'per_dataset': 0.858},
           'refined_iou': {'per_image': 0.968, 'per_dataset': 0.968},
           'own_average_mask': {'raw': {'per_image': 0.26, 'per_dataset': 0.221},
                                'refined': {'per_image': 0.732, 'per_dataset': 0.705}},
           'centred_disc': {'raw': {'per_image': 0.36, 'per_dataset': 0.356}, 'refined': None},
           'target': {'iou': 0.9, 'protocol': 'per_dataset', 'reached': 'refined'},
           'source': 'benchmarks/results/run.txt'}
    row.update(kw)
    return row


@pytest.fixture
def results_repo(tmp_path):
    "A repository with headline.json, the run file it names, and nbs/index.ipynb holding an up-to-date table."
    root = tmp_path/'repo'
    res = root/'benchmarks'/'results'
    res.mkdir(parents=True)
    (res/'run.txt').write_text('numbers\n')
    (res/'headline.json').write_text(json.dumps({'schema': 1, 'rows': [_row()]}, indent=1))
    table = rt.render(rt.load_rows(res/'headline.json', root))
    md = f'## Results\n\nMeasured on a CPU.\n\n{rt.START}\n\n{table}\n\n{rt.END}\n\nMore text.'
    _write(_nb(('md', '# Index'), ('md', md), ('code', 'print(1)')), root/'nbs'/'index.ipynb')
    _write(_nb(('md', '# Other')), root/'nbs'/'01_other.ipynb')
    return root


def _check(root):
    return rt.check(rt.find_notebooks(root/'nbs'), root/'benchmarks'/'results'/'headline.json', root)


def test_results_table_up_to_date_passes(results_repo, capsys):
    assert _check(results_repo) == []
    args = ['--check', '--json', str(results_repo/'benchmarks/results/headline.json'), '--nbs', str(results_repo/'nbs'),
            '--root', str(results_repo)]
    assert rt.main(args) == 0
    assert 'up to date in 1 notebook' in capsys.readouterr().out
    before = (results_repo/'nbs'/'index.ipynb').read_text()
    assert rt.write_notebook(results_repo/'nbs'/'index.ipynb', rt.render(rt.load_rows(
        results_repo/'benchmarks/results/headline.json', results_repo))) == []
    assert (results_repo/'nbs'/'index.ipynb').read_text() == before


def test_results_table_edited_by_hand_is_stale(results_repo, capsys):
    nb_path = results_repo/'nbs'/'index.ipynb'
    nb = json.loads(nb_path.read_text())
    src = ''.join(nb['cells'][1]['source'])
    assert '**0.968**' in src
    nb['cells'][1]['source'] = src.replace('**0.968**', '**0.970**')
    nb_path.write_text(json.dumps(nb, indent=1))
    probs = _check(results_repo)
    assert len(probs) == 1 and probs[0][0] == nb_path
    assert 'cell 1: the results table is stale' in probs[0][1] and 'results_table.py --write' in probs[0][1]
    args = ['--json', str(results_repo/'benchmarks/results/headline.json'), '--nbs', str(results_repo/'nbs'),
            '--root', str(results_repo)]
    assert rt.main(['--check'] + args) == 1
    assert 'stale' in capsys.readouterr().err
    assert rt.main(['--write'] + args) == 0               # --write puts the JSON's numbers back
    assert _check(results_repo) == []
    text = ''.join(json.loads(nb_path.read_text())['cells'][1]['source'])
    assert text.startswith('## Results\n\nMeasured on a CPU.\n\n') and text.endswith(f'{rt.END}\n\nMore text.')


def test_results_table_stale_after_new_numbers(results_repo):
    hl = results_repo/'benchmarks'/'results'/'headline.json'
    hl.write_text(json.dumps({'rows': [_row(f_iou={'per_image': 0.91, 'per_dataset': 0.905})]}))
    assert len(_check(results_repo)) == 1
    rows = rt.load_rows(hl, results_repo)
    assert '**0.910 / 0.905**' in rt.render(rows)        # bold: F reaches the 0.90 per-dataset target
    assert rt.consistency_warnings(rows)                   # ... but the row says "reached refined"


def test_results_json_problems_are_named(results_repo):
    hl = results_repo/'benchmarks'/'results'/'headline.json'
    hl.write_text(json.dumps([_row(source='benchmarks/results/gone.json', f_iou={'per_image': 1.5, 'per_dataset': 0.5})]))
    with pytest.raises(rt.TableError) as e: rt.load_rows(hl, results_repo)
    assert 'gone.json does not exist' in str(e.value) and 'f_iou.per_image' in str(e.value)
    probs = _check(results_repo)
    assert len(probs) == 1 and 'results table not checked' in probs[0][1]


def test_unbalanced_markers_are_reported(results_repo):
    _write(_nb(('md', f'{rt.START}\n| x |')), results_repo/'nbs'/'02_bad.ipynb')
    probs = _check(results_repo)
    assert len(probs) == 1 and 'exactly one' in probs[0][1]


def test_the_repository_headline_json_is_valid():
    rows = rt.load_rows()
    assert len(rows) >= 4 and rt.consistency_warnings(rows) == []
    table = rt.render(rows)
    assert table.count('\n|') == len(rows) + 1 and cd.pipe_table_problems(table) == []


def test_table_rows_cut_off_by_a_blank_line_are_reported():
    md = '| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n| 5 | 6 |\n\nText | with a bar.\n'
    probs = cd.pipe_table_problems(md)
    assert len(probs) == 1 and probs[0].startswith('line 5: table row outside any table (and 1 more lines)'), probs
    assert cd.pipe_table_problems(md.replace('| 2 |\n\n| 3', '| 2 |\n| 3')) == []
    assert 'outside any table' in cd.pipe_table_problems('| a | b |\n| 1 | 2 |\n')[0]   # no separator line


def test_signature_differences_are_put_in_words():
    old = 'def f(\n    n:int=10, amp_dtype:NoneType=None\n)->Tensor:'
    assert cd._sig_diff(old, 'def f(\n    n:int=10, amp:str=\'auto\'\n)->Tensor:') == \
        "now has `amp:str='auto'`; the stored output has `amp_dtype:NoneType=None`"
    assert cd._sig_diff(old, old.replace('Tensor', 'list')) == 'ends `->list:` instead of `->Tensor:`'
    docd = 'def f(\n    n:int=10, # how many\n    amp_dtype:NoneType=None\n)->Tensor:'
    assert 'comments (docments) differ' in cd._sig_diff(old, docd)
