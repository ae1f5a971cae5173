"""Tests for `redo_nb.paper_datasets`: the loaders on miniature official layouts, downloads from a local server."""
import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from redo_nb import paper_datasets as ds
from redo_nb.data import IGNORE
from redo_nb.datasets import get_dataset
from redo_nb.testing import fake_cub, fake_flowers102, fake_lfw


pytestmark = pytest.mark.usefixtures('private_cache')  # conftest.py: caches in tmp_path / 'cache'


# --- downloads ----------------------------------------------------------------------------------------------
class RangeServer(http.server.BaseHTTPRequestHandler):
    "Serves the bytes of `files[path]`, honouring `Range: bytes=N-` unless `honour_range` is False."
    files, requests, honour_range = {}, [], True

    def do_GET(self):
        data = self.files.get(self.path)
        if data is None: self.send_error(404); return
        start = int(self.headers['Range'][6:-1]) if self.headers.get('Range') and self.honour_range else 0
        type(self).requests.append((self.path, self.headers.get('Range')))
        if start >= len(data): self.send_response(416); self.end_headers(); return
        self.send_response(206 if start else 200)
        self.send_header('Content-Length', str(len(data) - start)); self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args): pass


@pytest.fixture
def server():
    RangeServer.files, RangeServer.requests, RangeServer.honour_range = {}, [], True
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), RangeServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown(); srv.server_close()


def test_download_resumes_a_partial_file(tmp_path, server):
    data = os.urandom(50_000); RangeServer.files['/a.bin'] = data
    (tmp_path / 'a.bin.part').write_bytes(data[:12_345])
    out = ds.download(f"{server}/a.bin", tmp_path / 'a.bin', hashlib.md5(data).hexdigest(), progress=False)
    assert out.read_bytes() == data and RangeServer.requests == [('/a.bin', 'bytes=12345-')]
    assert not (tmp_path / 'a.bin.part').exists()


def test_download_restarts_when_server_ignores_range(tmp_path, server):
    data = os.urandom(20_000); RangeServer.files['/a.bin'] = data; RangeServer.honour_range = False
    (tmp_path / 'a.bin.part').write_bytes(b'x' * 5_000)
    out = ds.download(f"{server}/a.bin", tmp_path / 'a.bin', hashlib.md5(data).hexdigest(), progress=False)
    assert out.read_bytes() == data


def test_download_complete_part_gets_416(tmp_path, server):
    data = os.urandom(1_000); RangeServer.files['/a.bin'] = data
    (tmp_path / 'a.bin.part').write_bytes(data)
    assert ds.download(f"{server}/a.bin", tmp_path / 'a.bin', hashlib.md5(data).hexdigest(),
                       progress=False).read_bytes() == data


def test_download_checksum_mismatch(tmp_path, server):
    RangeServer.files['/a.bin'] = b'hello'
    with pytest.raises(ValueError, match='checksum mismatch'):
        ds.download(f"{server}/a.bin", tmp_path / 'a.bin', '0' * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_file_url(tmp_path):
    (tmp_path / 'src').write_bytes(b'abc')
    assert ds.download((tmp_path / 'src').as_uri(), tmp_path / 'dst', progress=False).read_bytes() == b'abc'


def test_extract_refuses_path_traversal(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tf:
        info = tarfile.TarInfo('../evil.txt'); info.size = 3
        tf.addfile(info, io.BytesIO(b'bad'))
    (tmp_path / 'evil.tgz').write_bytes(buf.getvalue())
    with pytest.raises(tarfile.TarError): ds.extract(tmp_path / 'evil.tgz', tmp_path / 'out')
    assert not (tmp_path / 'evil.txt').exists()


def tgz_of(folder: Path, members, dest: Path) -> bytes:
    "A .tgz of `members` (paths relative to `folder`)."
    with tarfile.open(dest, 'w:gz') as tf:
        for m in members: tf.add(folder / m, arcname=m)
    return dest.read_bytes()


def test_flowers102_download_true_fetches_and_extracts(tmp_path, server, monkeypatch):
    src = fake_flowers102(tmp_path / 'src')
    RangeServer.files['/102flowers.tgz'] = tgz_of(src, ['jpg'], tmp_path / 'f.tgz')
    RangeServer.files['/102segmentations.tgz'] = tgz_of(src, ['segmim'], tmp_path / 's.tgz')
    RangeServer.files['/setid.mat'] = (src / 'setid.mat').read_bytes()
    monkeypatch.setattr(ds, 'FLOWERS102_RESOURCES', [r._replace(url=f"{server}/{r.filename}", md5=None)
                                                      for r in ds.FLOWERS102_RESOURCES])
    data = ds.flowers102(tmp_path / 'dst', 32, 'train', download=True)
    assert len(data) == 3 and data.labelled.all()


# --- missing files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('loader,names', [(ds.flowers102, ['jpg', 'segmim', 'setid.mat', '102flowers.tgz']),
                                          (ds.cub, ['CUB_200_2011/images.txt', 'CUB_200_2011.tgz']),
                                          (ds.lfw, ['lfw_funneled', 'lfw-funneled.tgz'])])
def test_missing_files_are_named_with_their_source(tmp_path, loader, names):
    with pytest.raises(FileNotFoundError) as e: loader(tmp_path / 'empty')
    for n in names: assert n in str(e.value)
    assert 'download=True' in str(e.value) and '--download' in str(e.value)  # for Python and terminal users


@pytest.mark.parametrize('name', ['flowers102', 'cub', 'lfw', 'flowers_lfw'])
def test_get_dataset_missing_files_mention_download_flag(tmp_path, name):
    with pytest.raises(FileNotFoundError, match='--download'): get_dataset(name, tmp_path / 'empty', 32, 'test')
    with pytest.raises(ValueError, match='--download'): get_dataset(name, None)


@pytest.mark.parametrize('name,fake,expected', [
    ('flowers102', fake_flowers102, ['102flowers.tgz', '102segmentations.tgz', 'setid.mat']),
    ('cub', fake_cub, ['CUB_200_2011.tgz', 'segmentations.tgz']),
    ('lfw', fake_lfw, ['lfw-funneled.tgz', 'parts_lfw_funneled_gt_images.tgz'])])
def test_get_dataset_download_true_reaches_download(tmp_path, monkeypatch, name, fake, expected):
    "download=True through the registry: each missing archive goes to `download`; here a stand-in writes the tree."
    calls = []
    def fake_download(url, dest, md5=None, **kw):
        calls.append((url, Path(dest).name))
        fake(Path(dest).parent)
        if not Path(dest).exists(): Path(dest).write_bytes(b'')  # an empty file: no archive to extract
        return Path(dest)
    monkeypatch.setattr(ds, 'download', fake_download)
    root = tmp_path / 'missing'
    with pytest.raises(FileNotFoundError): get_dataset(name, root, 32, 'test')  # without download=True: no call
    assert calls == []
    data = get_dataset(name, root, 32, 'test', download=True)
    assert [n for _, n in calls] == expected and all(u.startswith('http') for u, _ in calls)
    assert len(data) > 0 and data.labelled.all()


def test_flowers102_missing_photo_listed_in_setid(tmp_path):
    root = fake_flowers102(tmp_path)
    (root / 'jpg' / 'image_00005.jpg').unlink()
    with pytest.raises(FileNotFoundError, match='image_00005.jpg'): ds.flowers102(root, 32, 'train')


# --- loaders on miniature official layouts ------------------------------------------------------------------
def test_flowers102_splits_and_foreground(tmp_path):
    root = fake_flowers102(tmp_path)
    sizes = {s: len(ds.flowers102(root, 32, s)) for s in ('train', 'val', 'test')}
    assert sizes == {'train': 3, 'val': 1, 'test': 2}  # the authors: train = tstid, test = trnid
    assert len(ds.flowers102(root, 32, 'train', official_split=True)) == 2
    m = ds.flowers102(root, 32, 'test').masks
    assert m[:, 16, 16].tolist() == [1, 1] and m[:, 0, 0].tolist() == [0, 0]


def test_flowers102_foreground_rule(tmp_path):
    from PIL import Image
    seg = np.array([[[0, 0, 254], [10, 0, 30], [0, 50, 50], [90, 80, 254], [120, 60, 40]]], np.uint8)
    Image.fromarray(seg).save(tmp_path / 'segmim_00001.png')  # lossless, to test the exact rule
    assert ds.flowers102_foreground(tmp_path / 'segmim_00001.png').tolist() == [[0, 0, 0, 0, 1]]


def test_cub_split_file_and_fallback(tmp_path):
    root = fake_cub(tmp_path / 'cub')
    assert [len(ds.cub(root, 32, s)) for s in ('train', 'val', 'test')] == [4, 2, 2]
    assert len(ds.cub(root / 'CUB_200_2011', 32, 'val')) == 2  # root may also be the inner folder
    masks = ds.cub(root, 32, 'all').masks
    assert set(masks.unique().tolist()) == {0, 1}
    root2 = fake_cub(tmp_path / 'nosplit', with_split_file=False)
    with pytest.warns(UserWarning, match='split'):
        parts = [ds.cub(root2, 32, s) for s in ('train', 'val', 'test')]
    assert sum(map(len, parts)) == 8


def test_lfw_train_unlabelled_test_labelled(tmp_path):
    root = fake_lfw(tmp_path)
    train, test = ds.lfw(root, 32, 'train'), ds.lfw(root, 32, 'test')
    assert not train.labelled.any() and (train.masks == IGNORE).all()
    assert test.labelled.all() and set(test.masks.unique().tolist()) == {0, 1}


def test_lfw_missing_split_list_names_the_url(tmp_path):
    root = fake_lfw(tmp_path)
    (root / 'test.txt').unlink()
    with pytest.raises(FileNotFoundError, match='datasplits/LFW/test.txt'): ds.lfw(root, 32, 'test')


def test_flowers_lfw_per_source(tmp_path):
    fake_flowers102(tmp_path / 'flowers102'); fake_lfw(tmp_path / 'lfw')
    mix = get_dataset('flowers_lfw', tmp_path, 32, 'test')
    assert set(mix.sources) == {'flowers102', 'lfw'} and len(mix.source_subset('lfw')) == 2
