"""Shared test set-up: the tiny training configuration, one torch thread, a private dataset cache.

Test files ask for these by name (`tiny`, `tiny_config`, `tiny_cli`, `one_thread`, `private_cache`); nothing here is
autouse, so the files of other areas (GPU checks, docs tools) run as they did.
"""
import copy, json

import pytest
import torch

# The paper's method (the `paper` preset: TrainConfig's defaults, none of the `cpu` preset's additions, which change
# as the recipe evolves) on a ReDO model small enough for several iterations per second on one CPU thread.
# amp='off': the same fp32 numbers on every CPU ('auto' picks bf16 on CPUs where it measures faster).
PRESET = 'paper'
TINY = dict(img_size=32, batch_size=4, size_z=8, ch_f=8, ch_g=8, ch_d=8, n_val=8, amp='off', progress=False,
            num_threads=1, data_kwargs={'n_images': 32})


def tiny_overrides(**overrides) -> dict:
    "A fresh copy of `TINY` (nested dicts included) with `overrides` applied: keyword arguments for `get_config(PRESET, ...)`."
    return {**copy.deepcopy(TINY), **overrides}


def cli_args(overrides: dict) -> list:
    "The `redo_train` arguments that give the `TrainConfig` of `PRESET` with `overrides`."
    args = ['--preset', PRESET]
    for k, v in overrides.items():
        if k == 'img_size': args += ['--size', str(v)]
        elif k == 'iters': args += ['--iters', str(v)]
        elif k == 'progress' and v is False: args.append('--quiet')
        else: args += ['--set', f'{k}={v if isinstance(v, str) else json.dumps(v)}']
    return args


@pytest.fixture(scope='session')
def tiny():
    "`tiny(**overrides)`: the tiny configuration as a fresh dict of overrides of the `paper` preset (`PRESET`)."
    return tiny_overrides


@pytest.fixture
def tiny_config(tmp_path):
    "`tiny_config(**overrides)`: the `TrainConfig` of the tiny configuration, its run folders under the test's tmp_path."
    from redo_nb.config import get_config
    def make(**overrides):
        return get_config(PRESET, **tiny_overrides(out_dir=str(tmp_path / 'runs'), **overrides))
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
