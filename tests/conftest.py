"""Shared test set-up: the tiny training configuration, one torch thread, a private dataset cache.

Test files ask for these by name (`tiny`, `tiny_config`, `tiny_cli`, `one_thread`, `private_cache`); nothing here is
autouse, so the files of other areas (GPU checks, docs tools) run as they did.
"""
import copy, json

import pytest
import torch

# A ReDO model small enough for several iterations per second on one CPU thread. amp='off': the same (fp32) numbers on
# every CPU ('auto' picks bf16 on CPUs that compute it natively); lambda_self=0: the paper's objective only (the `cpu`
# preset's self-training refines the masks at every step, which costs more than the tiny networks themselves).
TINY = dict(img_size=32, batch_size=4, size_z=8, ch_f=8, ch_g=8, ch_d=8, n_val=8, amp='off', lambda_self=0.,
            progress=False, num_threads=1, max_minutes=None, data_kwargs={'n_images': 32})


def tiny_overrides(**overrides) -> dict:
    "A fresh copy of `TINY` (nested dicts included) with `overrides` applied: keyword arguments for `get_config('cpu', ...)`."
    return {**copy.deepcopy(TINY), **overrides}


def cli_args(overrides: dict) -> list:
    "The `redo_train` arguments that give the `TrainConfig` fields `overrides`."
    args = []
    for k, v in overrides.items():
        if k == 'img_size': args += ['--size', str(v)]
        elif k == 'iters': args += ['--iters', str(v)]
        elif k == 'progress' and v is False: args.append('--quiet')
        else: args += ['--set', f'{k}={v if isinstance(v, str) else json.dumps(v)}']
    return args


@pytest.fixture(scope='session')
def tiny():
    "`tiny(**overrides)`: the tiny configuration as a fresh dict of `TrainConfig` overrides."
    return tiny_overrides


@pytest.fixture
def tiny_config(tmp_path):
    "`tiny_config(**overrides)`: the `cpu` preset at the tiny sizes, its run folders under the test's tmp_path."
    from redo_nb.config import get_config
    def make(**overrides):
        return get_config('cpu', **tiny_overrides(out_dir=str(tmp_path / 'runs'), **overrides))
    return make


@pytest.fixture(scope='session')
def tiny_cli():
    "`tiny_cli(**overrides)`: `redo_train` arguments for the tiny configuration (4 iterations unless overridden)."
    return lambda **overrides: cli_args(tiny_overrides(**{'iters': 4, **overrides}))


@pytest.fixture
def one_thread():
    "torch on one thread for the test (the machines running the suite also run training jobs), restored after."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    "Decoded-dataset caches go to the test's own folder (REDO_NB_CACHE), never to ~/.cache or another test's."
    monkeypatch.setenv('REDO_NB_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'
