"""Project-level checks: one Quarto config, a sidebar that lists every notebook, settings nbdev needs."""
import configparser, os, re, shutil, subprocess, sys
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
