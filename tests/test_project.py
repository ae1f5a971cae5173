"""Project-level checks: one Quarto config, a sidebar that lists every notebook, settings nbdev needs, short docstrings."""
import configparser, dataclasses, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quarto_yml_is_a_relative_link_to_the_top_level_file():
    link = ROOT/'nbs'/'_quarto.yml'
    assert link.is_symlink(), 'nbs/_quarto.yml must be a link, not a second copy that can drift'
    assert os.readlink(link) == '../_quarto.yml'
    assert link.resolve() == (ROOT/'_quarto.yml').resolve()


def test_nbdev_docs_processing_keeps_our_quarto_config(tmp_path):
    "nbdev's `refresh_quarto_yml` (run before every docs build) must neither replace the link nor rewrite it."
    work = tmp_path/'proj'
    shutil.copytree(ROOT, work, symlinks=True, ignore=shutil.ignore_patterns('.venv', '.git', '_proc', '_docs', '*.pt', 'runs'))
    before = (work/'_quarto.yml').read_text()
    nbdev_yml = (work/'nbs'/'nbdev.yml').read_text()
    code = 'from nbdev.quarto import refresh_quarto_yml; refresh_quarto_yml()'
    subprocess.run([sys.executable, '-c', code], cwd=work, check=True)
    assert (work/'nbs'/'_quarto.yml').is_symlink()
    assert (work/'_quarto.yml').read_text() == before
    assert (work/'nbs'/'nbdev.yml').read_text() == nbdev_yml, 'nbs/nbdev.yml is generated from settings.ini: regenerate it'
    assert not (work/'nbs'/'sidebar.yml').exists(), 'custom_sidebar must stay True: the sidebar lives in _quarto.yml'


def test_sidebar_lists_every_notebook_and_only_existing_ones():
    text = (ROOT/'_quarto.yml').read_text()
    listed = set(re.findall(r'-\s+(\S+\.ipynb)', text))
    present = {p.name for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_')}
    assert listed - present == set(), f'sidebar lists missing notebooks: {sorted(listed - present)}'
    assert present - listed == set(), f'notebooks missing from the sidebar: {sorted(present - listed)}'


def test_settings_for_nbdev_2():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini')
    d = cfg['DEFAULT']
    assert d['lib_name'] == 'redo-nb' and d['lib_path'] == 'redo_nb'
    assert d['tst_flags'].split() == ['notest', 'slow', 'cuda']
    assert d['readme_nb'] == 'index.ipynb'
    scripts = d['console_scripts'].split()
    assert {s.split('=')[0] for s in scripts} == {'redo_train', 'redo_eval', 'redo_segment'}
    assert 'pkg_resources' not in (ROOT/'setup.py').read_text()
    dev = d['dev_requirements'].split()
    assert 'nbdev==2.4.14' in dev and 'execnb<0.2' in dev and 'fastcore<2' in dev


def test_readme_is_generated_from_index():
    "README.md must be what tools/make_readme.py makes from nbs/index.ipynb."
    out = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--stdout'], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    assert out == (ROOT/'README.md').read_text(), 'README.md is stale: run python tools/make_readme.py'


MAX_DOC_LINE = 120


def _public_api():
    """([(qualified name, object)], [import errors]): every public function and class in the `__all__` of each module of
    redo_nb, and the public methods (functions, class and static methods, properties) their classes define in the package."""
    import importlib, inspect, pkgutil
    import redo_nb
    seen, res, errors = set(), [], []
    for info in sorted(pkgutil.walk_packages(redo_nb.__path__, 'redo_nb.'), key=lambda i: i.name):
        if info.name.rsplit('.', 1)[-1].startswith('_'): continue
        try: mod = importlib.import_module(info.name)
        except Exception as e:
            errors.append(f'{info.name}: cannot import: {type(e).__name__}: {e}')
            continue
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name, None)
            if not (inspect.isclass(obj) or inspect.isroutine(obj)) or id(obj) in seen: continue
            seen.add(id(obj))
            res.append((f'{info.name}.{name}', obj))
            if not inspect.isclass(obj): continue
            for klass in obj.__mro__:  # methods defined in the package, also those inherited from its own classes
                if not (getattr(klass, '__module__', '') or '').startswith('redo_nb'): continue
                for attr, member in vars(klass).items():
                    if attr.startswith('_') or (obj, attr) in seen: continue
                    fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if isinstance(fn, property): fn = fn.fget
                    if not inspect.isfunction(fn): continue
                    seen.add((obj, attr))
                    res.append((f'{info.name}.{name}.{attr}', fn))
    return res, errors


def test_public_api_has_short_docstrings():
    "Every public function, class and method has a docstring whose first line (what show_doc shows) fits 120 characters."
    import inspect
    api, bad = _public_api()
    assert api, 'no public names found in redo_nb'
    for qual, obj in api:
        doc = inspect.getdoc(obj) if not inspect.isclass(obj) else obj.__dict__.get('__doc__')
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and (doc or '').startswith(obj.__name__ + '('):
            doc = None  # the signature dataclasses write when there is no docstring
        first = inspect.cleandoc(doc).split('\n', 1)[0] if doc and doc.strip() else ''
        if not first: bad.append(f'{qual}: no docstring')
        elif len(first) > MAX_DOC_LINE: bad.append(f'{qual}: first line {len(first)} characters: {first[:60]}...')
    if bad:
        pytest.fail(f'{len(bad)} of {len(api)} public functions, classes and methods need a docstring whose first line '
                    f'has at most {MAX_DOC_LINE} characters (a summary; details go on the next lines):\n  '
                    + '\n  '.join(bad), pytrace=False)
