"torch.compile paths (TrainConfig.compile, segment(compile=True)): they run, past recompilations, and agree with eager."
import shutil, warnings

import pytest
import torch

from redo_nb.inference import segment
from redo_nb.train import Trainer

pytestmark = [pytest.mark.skipif(not (shutil.which('c++') or shutil.which('g++')),
                                 reason='torch.compile on a CPU needs a C++ compiler (none on PATH)'),
              pytest.mark.usefixtures('one_thread')]
# the trainers: conftest.py's tiny configuration (fp32, the paper's objective), without evaluation


def _steps(t: Trainer, k: int) -> list:
    "Generator and discriminator losses of `k` training iterations."
    out = []
    for _ in range(k):
        t.iteration += 1
        logs = {**t.generator_step(), **t.discriminator_step()}
        out.append([logs['loss_g'].item(), logs['loss_d'].item()])
    return out


def test_compiled_training_runs_and_matches_eager(tiny_config):
    "Three iterations compiled: the region sub-batches change between them (G runs eagerly), no fallback, losses as eager."
    torch.manual_seed(0)
    eager = Trainer(tiny_config(val_split=None, name='eager'))
    compiled = Trainer(tiny_config(val_split=None, compile=True, name='compiled'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        got = _steps(compiled, 3)
    assert not [w for w in caught if 'torch.compile failed' in str(w.message)], [str(w.message)[:300] for w in caught]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(_steps(eager, 3)), rtol=1e-3, atol=1e-4)


def test_compiled_segment_matches_eager(tiny_config):
    "segment(compile=True) gives eager's masks, the last (padded) batch included, and keeps its compiled F for the next call."
    model = Trainer(tiny_config(val_split=None)).model.eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    ref = segment(model, images, batch_size=2, amp='off')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        got = segment(model, images, batch_size=2, amp='off', compile=True)
        again = segment(model, images[:3], batch_size=2, amp='off', compile=True)
    assert not [w for w in caught if 'torch.compile failed' in str(w.message)]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(again, ref[:3], rtol=0, atol=1e-4)
