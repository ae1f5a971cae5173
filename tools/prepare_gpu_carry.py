"""Write `.gpu_carry/` (git-ignored): what `benchmarks/gpu_check.py` needs on a lent GPU machine that the working tree
does not bring, then print the exact device `run` call.

- `oxford17_flowers/`: Oxford-17 shrunk to what 128 px training needs, in the official layout (`images_256/image_XXXX.jpg`,
  palette `labels_256/image_XXXX.png`, the names `redo_nb.photos.oxford17_flowers` reads). Each photo's shorter side
  is resized to `--size` (128) with the loader's own filter and rounding (Lanczos; labels nearest), so that at 128 px the
  loader resizes nothing: the images it gets are the ones it would make from the 256 px originals, but for the JPEG
  re-encoding (quality 95, no chroma subsampling: 1.4 of 255 levels off on average). About 17 MiB instead of 48.
- `wheels/`: the Python packages redo_nb requires (settings.ini) that the GPU machine's image lacks, by the package list
  of the device's KINDS.md (fastcore, at the version installed here), for its Python (3.12), from PyPI only.
- `SOURCE.json`: the commit and state of the working tree, the files and their sizes.

    python tools/prepare_gpu_carry.py                       # from ../shared/data/oxford17_flowers
    python tools/prepare_gpu_carry.py --data DIR --size 128 --no-wheels

The working tree, `.gpu_carry` included, must stay under the device's 64 MiB; the script says how much travels.
"""
from __future__ import annotations
import argparse, importlib.metadata as md, importlib.util, json, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KINDS = Path('/work/.library/device/KINDS.md')  # the device's description of its machines, where this workplace has it
GPU_PYTHON = '3.12'  # python3 on the nvidia-h200 image (KINDS.md)
# the nvidia-h200 image's packages that redo_nb could need, when KINDS.md cannot be read (as it listed them, 2026-11)
KNOWN_ON_GPU = {'torch', 'torchvision', 'numpy', 'pillow', 'matplotlib', 'tqdm', 'scipy', 'pytest', 'packaging',
                'triton', 'pyyaml', 'requests'}
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64']
LIMIT_MIB = 64


def norm(name: str) -> str: return re.sub(r'[-_.]+', '-', name).lower()


def shrink_size(w: int, h: int, size: int) -> tuple:
    "(w, h) scaled so that the shorter side is `size`, rounded as redo_nb.data.resize_center_crop rounds."
    scale = size / min(w, h)
    return max(size, round(w * scale)), max(size, round(h * scale))


def shrink_one(src: Path, dst: Path, size: int, quality: int, label: bool):
    with Image.open(src) as img:
        img.load()
        new = shrink_size(*img.size, size)
        if label:  # palette indices kept: nearest neighbour, mode 'P' and its palette
            out = img.resize(new, Image.Resampling.NEAREST) if new != img.size else img.copy()
            out.save(dst, optimize=True)
        else:
            out = img.convert('RGB')
            if new != img.size: out = out.resize(new, Image.Resampling.LANCZOS)
            out.save(dst, quality=quality, subsampling=0, optimize=True)  # 4:4:4: no chroma halving


def shrink_oxford17(src: Path, dst: Path, size: int, quality: int, force: bool) -> dict:
    "Copy the Oxford-17 tree `src` into `dst` at `size` px (shorter side); files already there are kept unless `force`."
    images = sorted((src/'images_256').glob('image_*.jpg'))
    if not images: raise SystemExit(f'no Oxford-17 photos in {src}/images_256 (see ../shared/data/README.md); pass --data')
    labels = sorted((src/'labels_256').glob('image_*.png'))
    jobs = [(p, dst/'images_256'/p.name, False) for p in images] + [(p, dst/'labels_256'/p.name, True) for p in labels]
    for sub in ('images_256', 'labels_256'): (dst/sub).mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if force or not j[1].is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: shrink_one(j[0], j[1], size, quality, j[2]), todo))
    stale = [p for sub in ('images_256', 'labels_256') for p in (dst/sub).iterdir()
             if not (src/sub/p.name).is_file()]
    for p in stale: p.unlink()
    return dict(images=len(images), labels=len(labels), written=len(todo), size=size, quality=quality,
                mib=round(_size(dst) / 2 ** 20, 2), source=str(src))


def gpu_packages(kinds: Path) -> tuple:
    "Normalised names of the Python packages on the nvidia-h200 image (KINDS.md's list), and where they came from."
    if kinds.is_file():
        text = kinds.read_text()
        m = re.search(r'nvidia-h200: their image.*?Packages: (.*?)\.\s*$', text, re.S | re.M)
        if m: return {norm(x.strip()) for x in m.group(1).split(',') if x.strip()}, str(kinds)
    return {norm(x) for x in KNOWN_ON_GPU}, 'built-in list (KINDS.md not found)'


def requirements() -> list:
    "(name, specifier) of settings.ini's `requirements`."
    text = (ROOT/'settings.ini').read_text()
    line = re.search(r'^requirements\s*=\s*(.*)$', text, re.M).group(1)
    return [(m.group(1), m.group(2)) for m in (re.match(r'([A-Za-z0-9_.\-]+)\s*(.*)', r) for r in line.split()) if m]


def wheel_requires(whl: Path) -> list:
    "Requirement names of a wheel (METADATA's Requires-Dist), leaving out those of extras."
    import zipfile
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
        lines = z.read(meta).decode().splitlines()
    reqs = [l.split(':', 1)[1].strip() for l in lines if l.startswith('Requires-Dist:')]
    return [re.match(r'[A-Za-z0-9_.\-]+', r).group(0) for r in reqs if 'extra ==' not in r]


def download_wheel(name: str, version: str | None, dest: Path) -> Path:
    spec = f'{name}=={version}' if version else name
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--python-version', GPU_PYTHON,
           '--implementation', 'cp', *[a for p in PLATFORMS for a in ('--platform', p)], '-d', str(dest), spec]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise SystemExit(f'pip download {spec} failed:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}')
    found = [p for p in dest.glob('*.whl') if norm(p.name.split('-')[0]) == norm(name)]
    if len(found) != 1: raise SystemExit(f'expected one wheel of {name} in {dest}, found {[p.name for p in found]}')
    return found[0]


def fetch_wheels(dest: Path, kinds: Path) -> dict:
    "Wheels of the requirements (and their requirements) missing on the GPU machine, at the versions installed here."
    have, where = gpu_packages(kinds)
    dest.mkdir(parents=True, exist_ok=True)
    todo, done, wheels = [n for n, _ in requirements()], set(), []
    while todo:
        name = todo.pop(0)
        if norm(name) in done or norm(name) in have: continue
        done.add(norm(name))
        try: version = md.version(name)
        except md.PackageNotFoundError: version = None
        whl = download_wheel(name, version, dest)
        wheels.append(whl.name)
        todo += wheel_requires(whl)
    for old in dest.glob('*.whl'):  # one version of each package: two would stop the install there
        if old.name not in wheels: old.unlink()
    return dict(wheels=wheels, gpu_packages_from=where, mib=round(_size(dest) / 2 ** 20, 2))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob('*') if p.is_file()) if Path(path).exists() else 0


def travelling_mib(carry: Path) -> float:
    "MiB of what a device call sends: tracked and untracked-not-ignored files, plus the carried folder."
    r = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                       capture_output=True, text=True)
    files = {ROOT/f for f in r.stdout.split('\0') if f}
    tree = sum(f.stat().st_size for f in files if f.is_file())
    return round((tree + _size(carry)) / 2 ** 20, 1)


def source_revision() -> dict:
    run = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return dict(commit=run('rev-parse', 'HEAD') or None, modified_files=len(run('status', '--porcelain').splitlines()),
                prepared=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))


def load_gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', ROOT/'benchmarks'/'gpu_check.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, default=ROOT.parent/'shared'/'data'/'oxford17_flowers', help='Oxford-17 root')
    p.add_argument('--out', type=Path, default=ROOT/'.gpu_carry')
    p.add_argument('--size', type=int, default=128, help="shorter side of the carried photos (the paper's 128 px)")
    p.add_argument('--quality', type=int, default=95, help='JPEG quality of the carried photos')
    p.add_argument('--no-wheels', dest='wheels', action='store_false', help='carry no wheels')
    p.add_argument('--kinds', type=Path, default=KINDS, help="the device's KINDS.md (the GPU machine's package list)")
    p.add_argument('--force', action='store_true', help='rewrite the photos already there')
    a = p.parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)  # a folder pattern (`.gpu_carry/`) matches existing folders only
    ignored = subprocess.run(['git', 'check-ignore', '-q', str(out)], cwd=ROOT).returncode == 0
    if not ignored:
        if not any(out.iterdir()): out.rmdir()
        raise SystemExit(f'{out} is not ignored by git: it would travel twice and could be committed')
    info = dict(source=source_revision(), oxford17=shrink_oxford17(a.data.resolve(), out/'oxford17_flowers', a.size, a.quality, a.force))
    info['wheels'] = fetch_wheels(out/'wheels', a.kinds) if a.wheels else dict(wheels=[])
    if not a.wheels and (out/'wheels').exists():
        for w in (out/'wheels').glob('*.whl'): w.unlink()
    (out/'SOURCE.json').write_text(json.dumps(info, indent=1))
    carry_mib, total = round(_size(out) / 2 ** 20, 1), travelling_mib(out)
    print(f"{out}: Oxford-17 {info['oxford17']['images']} photos and {info['oxford17']['labels']} labels at {a.size} px "
          f"({info['oxford17']['mib']} MiB), wheels {info['wheels']['wheels'] or 'none'}; {carry_mib} MiB carried, "
          f"{total} MiB travel in all (limit {LIMIT_MIB})")
    if total > LIMIT_MIB - 4: print(f'WARNING: {total} MiB is too close to the device limit of {LIMIT_MIB} MiB')
    g = load_gpu_check()
    rel = out.relative_to(ROOT).as_posix() if out.is_relative_to(ROOT) else str(out)
    if rel != g.RUN_CARRY[0]: print(f'NOTE: the prepared call carries {g.RUN_CARRY[0]}, not {rel}')
    print(f'\nThe device call (the check stops itself within {g.GPU_BUDGET_S} s, plus ~15 s of install and packing, '
          f'plus the machine start):\n')
    print(json.dumps(dict(command=g.RUN_COMMAND, carry=g.RUN_CARRY, timeout_s=g.RUN_TIMEOUT_S), indent=1))
    print('\nIf a stage failed and the machine is still warm (30 s), rerun at once only the failed stages, e.g.:\n')
    print(json.dumps(dict(command=g.rerun_command(['tests', 'bench_compiled']), carry=g.RUN_CARRY,
                          timeout_s=g.RERUN_TIMEOUT_S), indent=1))
    print('\nThen give_back. What comes back: summary.json, learn.png, learn_samples_last.png, env.json and gpu_check.tgz '
          '(the output folder but checkpoints and the other sample grids).')
    return info


if __name__ == '__main__':
    main()
