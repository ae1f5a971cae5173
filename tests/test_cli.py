"The three commands, run the way a user runs them (argument lists, one real subprocess)."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redo_nb.cli import eval_cli, segment_cli, train_cli

TINY = ['--size', '32', '--iters', '4', '--quiet', '--set', 'batch_size=4', '--set', 'ch_f=8', '--set', 'ch_g=8',
        '--set', 'ch_d=8', '--set', 'eval_every=4', '--set', 'n_val=16', '--set', 'data_kwargs={"n_images": 32}',
        '--set', 'num_threads=1']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny training run through the redo_train entry point in a subprocess."
    out = tmp_path_factory.mktemp('runs')
    code = 'from redo_nb.cli import train_cli; train_cli()'
    r = subprocess.run([sys.executable, '-c', code, *TINY, '--out', str(out), '--name', 'tiny'], capture_output=True,
                       text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    return out / 'tiny', r.stdout


def _fails(cli, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e: cli(argv)
    assert e.value.code != 0
    return capsys.readouterr().err


def test_train_cli(run):
    folder, stdout = run
    assert {'config.json', 'metrics.jsonl', 'last.pt', 'best.pt', 'summary.json'} <= {p.name for p in folder.iterdir()}
    assert list(folder.glob('samples_*.png'))
    for row in ('model', 'average_mask', 'centred_disc'): assert row in stdout
    assert json.loads((folder / 'summary.json').read_text())['iterations'] == 4


def test_train_cli_errors(capsys):
    assert "did you mean 'batch_size'" in _fails(train_cli, ['--set', 'batchsize=3'], capsys)
    assert 'available presets' in _fails(train_cli, ['--preset', 'huge'], capsys)
    train_cli(['--list-presets'])
    assert 'paper' in capsys.readouterr().out


def test_eval_cli(run, tmp_path):
    js = tmp_path / 's.json'
    scores = eval_cli([str(run[0] / 'best.pt'), '--split', 'val', '--set', 'n_images=16', '--json', str(js)])
    saved = json.loads(js.read_text())
    assert saved['n_images'] == 16 and saved['scores']['model']['image']['iou'] == scores['model']['image']['iou']
    assert saved['scores']['refined']['image']['iou'] == scores['refined']['image']['iou']


def test_eval_cli_bad_checkpoints(tmp_path, capsys):
    assert 'does not exist' in _fails(eval_cli, [str(tmp_path / 'nope.pt')], capsys)
    (tmp_path / 'x.pt').write_text('hello')
    assert 'not a readable redo-nb checkpoint' in _fails(eval_cli, [str(tmp_path / 'x.pt')], capsys)


def test_segment_cli(run, tmp_path, capsys):
    src, dst = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    Image.fromarray(np.random.randint(0, 255, (45, 70, 3), dtype=np.uint8)).save(src / 'wide.jpg')
    Image.fromarray(np.random.randint(0, 255, (64, 20, 4), dtype=np.uint8)).save(src / 'rgba.png')
    (src / 'broken.png').write_bytes(b'\x89PNG nonsense')
    (src / 'notes.txt').write_text('not an image, not counted')
    segment_cli([str(run[0] / 'best.pt'), str(src), str(dst)])
    out = capsys.readouterr()
    assert 'broken.png' in out.err and 'skipped 1 unreadable' in out.out
    assert sorted(p.name for p in dst.iterdir()) == ['rgba.png', 'wide.png']
    assert Image.open(dst / 'wide.png').size == (70, 45) and Image.open(dst / 'rgba.png').size == (20, 64)
    assert set(np.unique(np.asarray(Image.open(dst / 'wide.png')))) <= {0, 255}
    segment_cli([str(run[0] / 'best.pt'), str(src), str(dst), '--soft', '--refine'])
    assert Image.open(dst / 'wide.png').size == (70, 45)
    segment_cli([str(run[0] / 'best.pt'), str(src), str(dst), '--refine', '--size', '48'])  # mask_mean kept at the training size
    assert Image.open(dst / 'rgba.png').size == (20, 64)
    assert 'not a readable' in _fails(segment_cli, [str(src / 'broken.png'), str(src), str(dst)], capsys)


def test_train_on_a_user_folder_with_corrupt_files(tmp_path, monkeypatch, capsys):
    "redo_train --dataset folder: unlabelled and labelled photos train, masks evaluate, a corrupt file is skipped and reported."
    from redo_nb.data import make_synthetic
    monkeypatch.setenv('REDO_NB_CACHE', str(tmp_path / 'cache'))
    root = tmp_path / 'photos'; (root / 'images').mkdir(parents=True); (root / 'masks').mkdir()
    d = make_synthetic(12, 32, seed=5)
    for k in range(12):
        Image.fromarray(d.images[k].permute(1, 2, 0).numpy()).save(root / 'images' / f'img{k:02d}.png')
        if k < 6: Image.fromarray((d.masks[k].numpy() * 255).astype(np.uint8)).save(root / 'masks' / f'img{k:02d}.png')
    (root / 'images' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    tiny = TINY[:TINY.index('data_kwargs={"n_images": 32}') - 1] + TINY[TINY.index('data_kwargs={"n_images": 32}') + 1:]
    argv = ['--dataset', 'folder', '--root', str(root), '--out', str(tmp_path / 'runs'), '--name', 'mine', *tiny]
    with pytest.warns(UserWarning, match=r'skipped 1 of 13 images.*broken\.jpg'):
        train_cli(argv)
    out = capsys.readouterr().out
    assert 'images scored: 6' in out
    assert json.loads((tmp_path / 'runs' / 'mine' / 'summary.json').read_text())['iterations'] == 4
