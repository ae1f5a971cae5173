"""Does ReDO learn on the built-in synthetic data on a CPU? Target (issue): IoU >= 0.90 per-dataset within 10 CPU minutes.

python benchmarks/learns_builtin.py [--minutes 10] [--size 32]   -> benchmarks/results/learns_builtin.json (+ .png)
"""
import argparse, pathlib, sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from recipe_loop import CPU_RECIPE, run_benchmark
from redo_nb.data import get_dataset

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--minutes', type=float, default=10); ap.add_argument('--size', type=int, default=32)
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    tr, te = get_dataset('synthetic', None, a.size, 'train'), get_dataset('synthetic', None, a.size, 'test')
    run_benchmark('learns_builtin', tr.images, te.images, te.masks.long(), tr.n_regions, a.minutes,
                  {**CPU_RECIPE, 'img_size': a.size, 'seed': a.seed}, targets={'dataset': 0.90}, threads=a.threads)
