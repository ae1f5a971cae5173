"""Write README.md from nbs/index.ipynb without Quarto (which `nbdev_readme` needs).

Hidden cells and nbdev directives are dropped, code cells become fenced Python, text outputs fenced
blocks, and relative links (other notebooks: `05_train.ipynb` -> `nbs/05_train.ipynb`, images, files) are rewritten
to be relative to the repository root.
Usage: python tools/make_readme.py [--stdout]
"""
import base64, json, posixpath, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r'^\s*#\|\s*(.*)$')


def _directives(src):
    return {d.split()[0] for line in src.splitlines() if (m := DIRECTIVE.match(line)) and (d := m.group(1).strip())}


def _strip_directives(src):
    return '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip('\n')


def _outputs(cell, images, write):
    "Text outputs, and PNG figures saved under nbs/images/ (README cannot embed them)."
    out = []
    for o in cell.get('outputs', []):
        if 'image/png' in o.get('data', {}):
            name = f'readme_{len(images)}.png'
            images.append(name)
            if write:
                (ROOT/'nbs'/'images').mkdir(exist_ok=True)
                (ROOT/'nbs'/'images'/name).write_bytes(base64.b64decode(o['data']['image/png']))
            out.append(('MD', f'![](nbs/images/{name})'))
            continue
        if o['output_type'] == 'stream' and o.get('name') == 'stdout': out.append(''.join(o['text']))
        elif o['output_type'] in ('execute_result', 'display_data'):
            data = o.get('data', {})
            if 'text/markdown' in data: out.append(('MD', ''.join(data['text/markdown'])))
            elif 'text/plain' in data and 'image/png' not in data: out.append(''.join(data['text/plain']))
    return out


_LINK = re.compile(r'(\]\(\s*<?|\b(?:src|href)\s*=\s*["\'])([^)\s>"\']+)')
_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')


def _rebase(target):
    """A link target of nbs/index.ipynb as seen from the top-level README: relative links (other notebooks,
    `05_train.ipynb#x` -> `nbs/05_train.ipynb#x`; images; files, `../benchmarks/RESULTS.md` -> `benchmarks/RESULTS.md`)
    are rebased from nbs/; URLs, anchors, absolute paths, and links to the docs site's `.html` pages are kept."""
    path, sep, anchor = target.partition('#')
    if (not path or _SCHEME.match(path) or path.startswith(('/', 'nbs/'))
            or path.split('?')[0].endswith(('.html', '.htm'))): return target
    return posixpath.normpath('nbs/' + path) + sep + anchor


def _fix_links(md):
    # notebooks refer to notebooks, images and files relative to nbs/; README lives one level up
    return _LINK.sub(lambda m: m.group(1) + _rebase(m.group(2)), md)


def render(nb_path=ROOT/'nbs'/'index.ipynb', write_images=False):
    nb = json.loads(Path(nb_path).read_text())
    parts, images = [], []
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        flags = _directives(src)
        if flags & {'hide', 'exec_doc'} or 'include: false' in src: continue
        if cell['cell_type'] == 'markdown':
            parts.append(_fix_links(src.strip()))
            continue
        if cell['cell_type'] != 'code': continue
        code = _strip_directives(src)
        if code and 'echo: false' not in src: parts.append(f'```python\n{code}\n```')
        for o in _outputs(cell, images, write_images):
            parts.append(o[1].strip() if isinstance(o, tuple) else f'```\n{o.rstrip()}\n```')
    return '\n\n'.join(p for p in parts if p) + '\n'


if __name__ == '__main__':
    text = render(write_images='--stdout' not in sys.argv)
    if '--stdout' in sys.argv: sys.stdout.write(text)
    else: (ROOT/'README.md').write_text(text); print('wrote README.md')
