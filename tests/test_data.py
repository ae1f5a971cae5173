"""Bad-input and integration tests for reading data: `redo_nb.data`, `builtin`, `photos` and the registry `datasets`.

Each runs in well under a second except the real-data ones."""
import gzip
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from redo_nb.builtin import colored_mnist, load_mnist, make_synthetic
from redo_nb.data import IGNORE, SegmentationData, cached, load_image
from redo_nb.datasets import dataset_names, get_dataset
from redo_nb.photos import image_folder, oxford17_flowers
from redo_nb.testing import fake_photo_folder

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
rng = np.random.default_rng(0)
DISC = (((np.mgrid[:48, :64] - np.array([24, 32])[:, None, None]) ** 2).sum(0) < 15 ** 2).astype(np.uint8) * 255

pytestmark = pytest.mark.usefixtures('private_cache')  # conftest.py: caches in tmp_path / 'cache'


def photo(h=48, w=64):
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def folder(tmp_path, images: dict, masks: dict):
    "Write `{relative stem.ext: array|bytes}` into tmp_path/images and tmp_path/masks."
    for sub, files in (('images', images), ('masks', masks)):
        for name, content in files.items():
            p = tmp_path / sub / name
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes): p.write_bytes(content)
            else: Image.fromarray(content).save(p)
    return tmp_path


def load_quietly(*args, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        data = image_folder(*args, **kw)
    return data, [str(x.message) for x in w]


# --- single files -------------------------------------------------------------------------------------------
def test_truncated_image_names_the_file(tmp_path):
    Image.fromarray(photo()).save(tmp_path / 'ok.jpg')
    raw = (tmp_path / 'ok.jpg').read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(raw[:len(raw) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ValueError, match='cut.jpg'): load_image(tmp_path / 'cut.jpg')


def test_not_an_image_names_the_file(tmp_path):
    (tmp_path / 'fake.png').write_text('hello')
    with pytest.raises(ValueError, match='fake.png'): load_image(tmp_path / 'fake.png')


def test_truncated_images_flag_is_refused(tmp_path, monkeypatch):
    Image.fromarray(photo()).save(tmp_path / 'ok.png')
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
    with pytest.raises(RuntimeError, match='LOAD_TRUNCATED_IMAGES'): load_image(tmp_path / 'ok.png')


def test_grayscale_becomes_rgb(tmp_path):
    Image.fromarray(np.full((4, 4), 90, np.uint8)).save(tmp_path / 'g.png')
    assert np.asarray(load_image(tmp_path / 'g.png'))[0, 0].tolist() == [90, 90, 90]


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8); a[..., 1] = 200; a[:, :2, 3] = 255; a[:, 2:, 3] = 0
    Image.fromarray(a, 'RGBA').save(tmp_path / 'a.png')
    rgb = np.asarray(load_image(tmp_path / 'a.png'))
    assert rgb[0, 0].tolist() == [0, 200, 0] and rgb[0, 3].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path):
    p = Image.fromarray(np.array([[0, 1]], np.uint8), 'P'); p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.info['transparency'] = 0
    p.save(tmp_path / 'p.png', transparency=0)
    assert np.asarray(load_image(tmp_path / 'p.png')).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_16bit_scaled_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(tmp_path / 'd.png')
    assert np.asarray(load_image(tmp_path / 'd.png'))[0, :, 0].tolist() == [0, 128, 255]


# --- folders ------------------------------------------------------------------------------------------------
def test_corrupt_files_skipped_counted_and_listed(tmp_path):
    good = Image.fromarray(photo())
    good.save(tmp_path / 'x.jpg'); raw = (tmp_path / 'x.jpg').read_bytes()
    root = folder(tmp_path / 'f', {'a.jpg': photo(), 'b.jpg': raw[:200], 'c.png': b'garbage'}, {})
    data, msgs = load_quietly(root, 16)
    assert len(data) == 1
    assert sorted(Path(p).name for p, _ in data.skipped) == ['b.jpg', 'c.png']
    assert any('skipped 2 of 3 images' in m for m in msgs)


def test_all_images_corrupt_is_an_error(tmp_path):
    root = folder(tmp_path, {'a.png': b'x', 'b.png': b'y'}, {})
    with pytest.raises(ValueError, match='none of the 2 images'): load_quietly(root)


def test_mask_of_another_size_is_resized(tmp_path):
    half = np.asarray(Image.fromarray(DISC).resize((32, 24), Image.Resampling.NEAREST))
    root = folder(tmp_path, {'a.png': photo(), 'b.png': photo()}, {'a.png': DISC, 'b.png': half})
    data, msgs = load_quietly(root, 32)
    assert data.labelled.all() and any('1 masks resized' in m for m in msgs)
    assert (data.masks[0] != data.masks[1]).float().mean() < 0.03 and data.masks[0].sum() > 0


def test_mask_of_another_aspect_ratio_is_dropped(tmp_path):
    root = folder(tmp_path, {'a.png': photo()}, {'a.png': np.zeros((50, 50), np.uint8)})
    data, msgs = load_quietly(root, 16)
    assert data.labelled.tolist() == [False] and 'aspect ratio' in data.skipped[0][1]


def test_image_without_mask_is_unlabelled(tmp_path):
    root = folder(tmp_path, {'a.png': photo(), 'b.png': photo()}, {'a.png': DISC})
    data, _ = load_quietly(root, 16)
    assert data.labelled.tolist() == [True, False] and (data.masks[1] == IGNORE).all()
    assert set(data.masks[0].unique().tolist()) == {0, 1}


def test_mask_without_image_warns(tmp_path):
    root = folder(tmp_path, {'a.png': photo()}, {'a.png': DISC, 'typo.png': DISC})
    data, msgs = load_quietly(root, 16)
    assert any('1 masks' in m and 'typo.png' in m for m in msgs)
    assert ('mask without image' in [r for _, r in data.skipped])


def test_ignore_value_and_threshold(tmp_path):
    m = np.zeros((48, 64), np.uint8); m[:, 32:] = 255; m[:5] = 128
    root = folder(tmp_path, {'a.png': photo()}, {'a.png': m})
    data, _ = load_quietly(root, 48, ignore_value=128, resample='nearest')
    assert sorted(data.masks.unique().tolist()) == [0, 1, IGNORE]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): image_folder(tmp_path / 'nope')


def test_empty_folder(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'images' / 'notes.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='no images'): image_folder(tmp_path)


def test_root_one_level_too_deep_reads_the_photos(tmp_path):
    folder(tmp_path, {'a.png': photo(), 'sub/b.png': photo()}, {'a.png': DISC})
    data = image_folder(tmp_path / 'images', 16)  # the photos themselves: read, without masks
    assert len(data) == 2 and not data.labelled.any()
    assert len(image_folder(tmp_path / 'images', 16, images_dir='.', recursive=False)) == 1


def test_plain_folder_of_photos(tmp_path):
    root = fake_photo_folder(tmp_path / 'p', n=5, masks=False, subfolder=False)
    data = image_folder(root, 16)
    assert len(data) == 5 and not data.labelled.any() and data.name == 'p'


def test_plain_folder_with_masks_never_reads_masks_as_photos(tmp_path):
    root = fake_photo_folder(tmp_path / 'p', n=4, masks=True, subfolder=False)
    assert (root / 'masks').is_dir() and (root / 'photo_000.jpg').is_file()
    data = image_folder(root, 16)
    assert len(data) == 4 and data.labelled.all()
    assert set(data.masks.unique().tolist()) == {0, 1}


def test_plain_folder_exclude(tmp_path):
    root = fake_photo_folder(tmp_path / 'p', n=3, subfolder=False)
    fake_photo_folder(root / 'val', n=2, subfolder=False, seed=1)
    assert len(image_folder(root, 16)) == 3 + 2 + 2  # val's photos and (not being root/masks) its masks
    assert len(image_folder(root, 16, exclude=['val'])) == 3


def test_folder_without_images_names_it_and_its_contents(tmp_path):
    (tmp_path / 'docs').mkdir(); (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match=r'no images .*in .*it contains: docs/, notes\.txt') as e:
        image_folder(tmp_path)
    assert str(tmp_path) in str(e.value) and 'images_dir' not in str(e.value)


def test_explicit_images_dir_must_exist(tmp_path):
    folder(tmp_path, {'a.png': photo()}, {})
    with pytest.raises(FileNotFoundError, match=r"no folder 'pics'.*images/"): image_folder(tmp_path, images_dir='pics')


def test_oxford17_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match='images_256'): oxford17_flowers(tmp_path)


# --- container and cache ------------------------------------------------------------------------------------
def test_batch_matches_getitem_and_save_load(tmp_path):
    d = make_synthetic(6, 16, n_objects=2, seed=1)
    x, m = d.batch([4, 1])
    assert torch.equal(x[0], d[4][0]) and torch.equal(m[1], d[1][1])
    assert torch.equal(x, d.images[[4, 1]].float() / 127.5 - 1)  # uint8 0..255 -> -1..1
    assert torch.equal(m, d.masks[[4, 1]].long())
    d.save(tmp_path / 'd.pt')
    e = SegmentationData.load(tmp_path / 'd.pt')
    assert torch.equal(e.images, d.images) and torch.equal(e.masks, d.masks) and e.n_regions == 3
    assert [p.name for p in tmp_path.iterdir()] == ['d.pt']


def test_cache_invalidated_when_a_file_changes(tmp_path):
    root = folder(tmp_path / 'f', {'a.png': photo()}, {})
    first = image_folder(root, 16, cache=True)
    Image.fromarray(photo()).save(root / 'images' / 'a.png')
    second = image_folder(root, 16, cache=True)
    assert not torch.equal(first.images, second.images)
    assert len(list((tmp_path / 'cache').glob('*.pt'))) == 2


def test_concat_keeps_sources():
    a, b = make_synthetic(3, 16, seed=0), make_synthetic(2, 16, n_objects=2, seed=1)
    mix = SegmentationData.concat([a, b], names=['one', 'two'])
    assert mix.sources == ['one'] * 3 + ['two'] * 2 and mix.n_regions == 3
    assert torch.equal(mix.source_subset('two').images, b.images)


# --- generated data -----------------------------------------------------------------------------------------
def _edge_ratio(images, masks) -> float:
    "Mean colour step between 4-neighbours across a mask boundary over that within a region."
    x = images.float()
    steps = [(x[..., :, 1:] - x[..., :, :-1]).abs().sum(1), (x[..., 1:, :] - x[..., :-1, :]).abs().sum(1)]
    cross = [masks[..., :, 1:] != masks[..., :, :-1], masks[..., 1:, :] != masks[..., :-1, :]]
    steps, cross = torch.cat([s.flatten() for s in steps]), torch.cat([c.flatten() for c in cross])
    return (steps[cross].mean() / steps[~cross].mean()).item()


def test_synthetic_is_deterministic_and_its_masks_are_exact():
    d = make_synthetic(200, 32, seed=0)
    assert torch.equal(make_synthetic(4, 32, seed=5).images, make_synthetic(4, 32, seed=5).images)
    assert not torch.equal(make_synthetic(4, 32, seed=5).images, make_synthetic(4, 32, seed=6).images)
    area = d.masks.float().mean((1, 2))
    assert 0.15 < area.mean() < 0.35 and (area > 0).all()
    # exact masks: their boundaries sit on the objects' edges, so moving them by one pixel makes them fit worse
    exact = _edge_ratio(d.images, d.masks)
    shifted = max(_edge_ratio(d.images, d.masks.roll(s, dim)) for s in (1, -1) for dim in (-1, -2))
    assert exact > 2 * shifted, (exact, shifted)


def test_colored_mnist_from_idx_and_csv(tmp_path):
    digits = np.zeros((4, 28, 28), np.uint8); digits[:, 8:20, 10:18] = 255
    labels = np.array([0, 1, 2, 3], np.uint8)
    def idx(a): return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, '>i4').tobytes() + a.tobytes()
    (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(idx(digits)))
    (tmp_path / 'train-labels-idx1-ubyte.gz').write_bytes(gzip.compress(idx(labels)))
    x, y = load_mnist(tmp_path, 'train')
    assert x.shape == (4, 28, 28) and y.tolist() == [0, 1, 2, 3]
    header = 'label,' + ','.join(f'pixel{i}' for i in range(784))
    np.savetxt(tmp_path / 'test.csv', np.hstack([labels[:, None], digits.reshape(4, -1)]), fmt='%d',
               delimiter=',', header=header, comments='')
    x2, y2 = load_mnist(tmp_path, 'test')
    assert torch.equal(x, x2) and torch.equal(y, y2)
    d = colored_mnist((x, y), 20, size=32, seed=0)
    assert d.n_regions == 3 and sorted(d.masks.unique().tolist()) == [0, 1, 2]


def test_get_dataset_names():
    assert get_dataset('synthetic2', size=16, n_images=3).n_regions == 3
    with pytest.raises(ValueError, match="unknown dataset 'nope'; known: colored_mnist, cub"): get_dataset('nope')
    with pytest.raises(ValueError, match="did you mean 'synthetic'"): get_dataset('synthetik')
    assert dataset_names() == ['colored_mnist', 'cub', 'flowers102', 'flowers_lfw', 'folder', 'lfw', 'oxford17',
                               'synthetic', 'synthetic2']
    assert dataset_names(downloads=True) == ['colored_mnist', 'cub', 'flowers102', 'flowers_lfw', 'lfw']


def test_data_imports_no_dataset_module():
    "No import cycle: the container knows nothing of the loaders; the registry knows them all without lazy imports."
    code = ("import sys, redo_nb.data; "
            "print(sorted(m for m in sys.modules if m.startswith('redo_nb.')))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    for name in ('builtin', 'photos', 'paper_datasets', 'datasets', 'testing'): assert f"'redo_nb.{name}'" not in out
    code = "import sys, redo_nb.datasets; print(sorted(m for m in sys.modules if m.startswith('redo_nb.')))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert "'redo_nb.testing'" not in out and "'redo_nb.paper_datasets'" in out


# --- the `folder` dataset's splits ----------------------------------------------------------------------------
def test_folder_val_without_masks_is_unlabelled_not_an_error(tmp_path):
    root = fake_photo_folder(tmp_path / 'p', n=4, masks=False, subfolder=False)
    for split in ('val', 'test'):
        d = get_dataset('folder', root, 16, split)
        assert len(d) == 4 and not d.labelled.any()
    assert len(get_dataset('folder', root, 16, 'train')) == 4


def test_folder_val_with_masks_is_the_labelled_subset(tmp_path):
    root = fake_photo_folder(tmp_path / 'p', n=5)
    (root / 'masks' / 'photo_000.png').unlink()
    val = get_dataset('folder', root, 16, 'val')
    assert len(val) == 4 and val.labelled.all()
    assert len(get_dataset('folder', root, 16, 'train')) == 5


def test_folder_with_a_val_folder(tmp_path):
    root = fake_photo_folder(tmp_path / 'p', n=5, masks=False, subfolder=False)
    fake_photo_folder(root / 'val', n=2, subfolder=False, seed=1)
    val = get_dataset('folder', root, 16, 'val')
    assert len(val) == 2 and val.labelled.all()
    assert len(get_dataset('folder', root, 16, 'train')) == 5  # the held-out val/ is not trained on
    tv = tmp_path / 'tv'
    fake_photo_folder(tv / 'train', n=3); fake_photo_folder(tv / 'val', n=2, masks=False)
    assert len(get_dataset('folder', tv, 16, 'train')) == 3
    assert len(get_dataset('folder', tv, 16, 'val')) == 2


# --- real data (skipped when ../shared/data is absent) ------------------------------------------------------
@pytest.mark.skipif(not (SHARED / 'oxford17_flowers').is_dir(), reason=f"Oxford-17 not found at {SHARED}")
def test_oxford17_real_counts_and_labels():
    d = oxford17_flowers(SHARED / 'oxford17_flowers', size=32, cache=False)
    assert (len(d), int(d.labelled.sum())) == (1360, 846)
    assert set(d.masks.unique().tolist()) == {0, 1, IGNORE}
    assert (d.masks[1040:1120] == IGNORE).all()  # class 14 has no labels


@pytest.mark.skipif(not (SHARED / 'mnist').is_dir(), reason=f"MNIST not found at {SHARED}")
def test_real_mnist_files():
    "The shared CSV and IDX files, read by load_mnist, hold what a plain reading of their bytes gives."
    x, y = load_mnist(SHARED / 'mnist', 'train')  # mnist_5k.csv.gz (README): 784 pixels then the label on each row
    with gzip.open(SHARED / 'mnist' / 'mnist_5k.csv.gz', 'rt') as f:
        rows = np.array([line.split(',') for line in f.read().split()], dtype=np.int64)
    assert x.shape == (len(rows), 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(rows[:, :784].reshape(-1, 28, 28).astype(np.uint8)))
    assert torch.equal(y, torch.from_numpy(rows[:, 784]))
    x, y = load_mnist(SHARED / 'mnist', 'test')  # t10k-*-idx?-ubyte.gz: a 16 (images) or 8 (labels) byte header
    raw = gzip.decompress((SHARED / 'mnist' / 't10k-images-idx3-ubyte.gz').read_bytes())
    n, h, w = np.frombuffer(raw, '>i4', 3, offset=4)
    assert x.shape == (n, h, w) == (len(y), 28, 28)
    assert torch.equal(x.flatten(), torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).copy()))
    labels = gzip.decompress((SHARED / 'mnist' / 't10k-labels-idx1-ubyte.gz').read_bytes())
    assert torch.equal(y, torch.from_numpy(np.frombuffer(labels, np.uint8, offset=8).astype(np.int64)))


def test_cache_hit_still_reports_skipped_files(tmp_path):
    root = folder(tmp_path / 'f', {'a.png': photo(), 'b.png': b'broken'}, {})
    load_quietly(root, 16)
    data, msgs = load_quietly(root, 16)  # from the cache this time
    assert len(data) == 1 and any('were skipped' in m for m in msgs)


def test_exif_orientation_applied(tmp_path):
    exif = Image.Exif(); exif[0x0112] = 6
    Image.fromarray(photo(10, 30)).save(tmp_path / 'phone.jpg', exif=exif)
    assert load_image(tmp_path / 'phone.jpg').size == (10, 30)
