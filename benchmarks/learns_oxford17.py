"""Does ReDO learn on Oxford-17 flowers on a CPU? Trains on all 1360 photos, scores the 846 labelled ones.
Target (issue): IoU >= 0.73 under both protocols at 64 px within 45 CPU minutes (centred disc 0.596, GrabCut 0.726).

python benchmarks/learns_oxford17.py [--root ../shared/data/oxford17_flowers] [--minutes 45] [--size 64]
"""
import argparse, pathlib, sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from recipe_loop import CPU_RECIPE, run_benchmark
from redo_nb.data import get_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'oxford17_flowers'

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--root', default=str(ROOT)); ap.add_argument('--minutes', type=float, default=45)
    ap.add_argument('--size', type=int, default=64); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    if not pathlib.Path(a.root).is_dir(): sys.exit(f'skipped: no Oxford-17 data at {a.root} (see ../shared/data/README.md)')
    data = get_dataset('oxford17', a.root, a.size, 'all'); scored = data.labelled_subset()
    run_benchmark('learns_oxford17', data.images, scored.images, scored.masks.long(), 2, a.minutes,
                  {**CPU_RECIPE, 'img_size': a.size, 'seed': a.seed}, targets={'image': 0.73, 'dataset': 0.73},
                  threads=a.threads)
