"""Does ReDO learn colored-2-MNIST (n = 3: background, even digit, odd digit) on a CPU?
Target (issue): mean IoU of the two digits >= 0.80 within 20 CPU minutes.

python benchmarks/learns_mnist.py [--root ../shared/data/mnist] [--minutes 20] [--size 32]
"""
import argparse, pathlib, sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from recipe_loop import CPU_RECIPE, run_benchmark
from redo_nb.data import get_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'mnist'

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--root', default=str(ROOT)); ap.add_argument('--minutes', type=float, default=20)
    ap.add_argument('--size', type=int, default=32); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0); ap.add_argument('--n_train', type=int, default=5000)
    a = ap.parse_args()
    if not pathlib.Path(a.root).is_dir(): sys.exit(f'skipped: no MNIST data at {a.root} (see ../shared/data/README.md)')
    tr = get_dataset('colored_mnist', a.root, a.size, 'train', n_images=a.n_train)
    te = get_dataset('colored_mnist', a.root, a.size, 'test', n_images=500)
    run_benchmark('learns_mnist', tr.images, te.images, te.masks.long(), 3, a.minutes,
                  {**CPU_RECIPE, 'img_size': a.size, 'seed': a.seed, 'size_z': 16}, targets={'image': 0.80, 'dataset': 0.80},
                  threads=a.threads)
