"The three commands, run the way a user runs them (argument lists, one real subprocess)."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from redo_nb.cli import border_mass, eval_cli, segment_cli, train_cli

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_cli):
    "A tiny training run through the redo_train entry point in a subprocess."
    out = tmp_path_factory.mktemp('runs')
    code = 'from redo_nb.cli import train_cli; train_cli()'
    argv = [*tiny_cli(eval_every=4, n_val=16), '--out', str(out), '--name', 'tiny']
    r = subprocess.run([sys.executable, '-c', code, *argv], capture_output=True,
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
    assert saved['n_images'] == 16 == scores['model']['image']['n_images']  # --set n_images=16 reached the loader
    assert saved['scores']['model']['image']['iou'] == scores['model']['image']['iou']
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


def test_train_on_a_user_folder_with_corrupt_files(tmp_path, capsys, tiny_cli, private_cache):
    "redo_train --dataset folder: unlabelled and labelled photos train, masks evaluate, a corrupt file is skipped and reported."
    from redo_nb.builtin import make_synthetic
    root = tmp_path / 'photos'; (root / 'images').mkdir(parents=True); (root / 'masks').mkdir()
    d = make_synthetic(12, 32, seed=5)
    for k in range(12):
        Image.fromarray(d.images[k].permute(1, 2, 0).numpy()).save(root / 'images' / f'img{k:02d}.png')
        if k < 6: Image.fromarray((d.masks[k].numpy() * 255).astype(np.uint8)).save(root / 'masks' / f'img{k:02d}.png')
    (root / 'images' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    argv = ['--dataset', 'folder', '--root', str(root), '--out', str(tmp_path / 'runs'), '--name', 'mine',
            *tiny_cli(eval_every=4, n_val=16, data_kwargs={})]
    with pytest.warns(UserWarning, match=r'skipped 1 of 13 images.*broken\.jpg'):
        train_cli(argv)
    out = capsys.readouterr().out
    assert 'images scored: 6' in out
    assert json.loads((tmp_path / 'runs' / 'mine' / 'summary.json').read_text())['iterations'] == 4


def test_border_mass_by_hand():
    "border_mass: each region's mean mask value over the 4H - 4 border pixels."
    M = torch.zeros(2, 2, 4, 4)
    M[:, 1, 1:3, 1:3] = 1  # region 1: the 2 x 2 centre of both images
    M[:, 0] = 1 - M[:, 1]
    torch.testing.assert_close(border_mass(M), torch.tensor([1., 0.]))
    M[0, 0, 0, 0], M[0, 1, 0, 0] = 0., 1.  # one border pixel of 12, in one image of 2, moves to region 1
    torch.testing.assert_close(border_mass(M), torch.tensor([1 - 1 / 24, 1 / 24]))


def _border_by_hand(M):
    "Mean of each region over the first and last rows and columns of every image: (n,)."
    rows = torch.cat([M[:, :, 0], M[:, :, -1], M[:, :, 1:-1, 0], M[:, :, 1:-1, -1]], -1)
    return rows.mean((0, 2))


def test_segment_cli_foreground_auto_picks_the_region_off_the_border(run, tmp_path, capsys):
    """--foreground auto writes as 255 the region whose masks touch the image border least.

    The trained model's own masks decide which region that is (border mass computed here by hand); a copy of the model
    with its two regions swapped (F's last convolution negated) must write the same pixels while naming the other
    region, so the choice follows the region, not its index."""
    from redo_nb.builtin import make_synthetic
    from redo_nb.engine import atomic_save, load_checkpoint
    from redo_nb.inference import load_model, segment
    ckpt = run[0] / 'best.pt'
    model = load_model(ckpt)
    src = tmp_path / 'in'; src.mkdir()
    images = make_synthetic(6, 32, seed=3).images  # the model's own size: read and written without resampling
    for k, x in enumerate(images): Image.fromarray(x.permute(1, 2, 0).numpy()).save(src / f'img{k}.png')
    M = segment(model, images)  # what redo_segment computes (same batch, same precision)
    border = _border_by_hand(M)
    assert (border[0] - border[1]).abs() > 1e-3, f'the two regions touch the border equally ({border}): no test'
    fg = int(border.argmin())
    # the swapped model: sigmoid(-l) = 1 - sigmoid(l), so region 0 and region 1 trade places
    ck = load_checkpoint(ckpt)
    last = max(int(k.split('.')[2]) for k in ck['model'] if k.startswith('F.layers.'))
    for part in ('weight', 'bias'): ck['model'][f'F.layers.{last}.1.{part}'] *= -1
    atomic_save(ck, tmp_path / 'swapped.pt')
    written = {}
    for name, expect in (('best', fg), ('swapped', 1 - fg)):
        dst = tmp_path / name
        segment_cli([str(ckpt if name == 'best' else tmp_path / 'swapped.pt'), str(src), str(dst), '--foreground', 'auto'])
        assert f'(foreground region {expect})' in capsys.readouterr().out, name
        written[name] = np.stack([np.asarray(Image.open(dst / f'img{k}.png')) for k in range(6)])
    want = ((M.argmax(1) == fg).numpy() * 255).astype(np.uint8)
    assert np.array_equal(written['best'], want)
    assert 0 < (want == 255).mean() < 1  # both values occur: the comparison says something
    assert (written['swapped'] != want).mean() < 1e-3  # the same pixels (up to logits that round to exactly 0)
    segment_cli([str(ckpt), str(src), str(tmp_path / 'other'), '--foreground', str(1 - fg)])
    other = np.stack([np.asarray(Image.open(tmp_path / 'other' / f'img{k}.png')) for k in range(6)])
    assert np.array_equal(other, 255 - want)  # naming the other region writes the complement
