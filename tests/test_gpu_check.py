"""benchmarks/gpu_check.py, the one command prepared for a lent GPU, end to end on the CPU in its dry mode (about 40 s):
every stage that can run without CUDA succeeds and writes its files; a failing or overrunning stage is recorded
without stopping the others; the device call in its docstring is the one it defines and fits the device's limits."""
import importlib.util, json, os, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'benchmarks'/'gpu_check.py'


def _gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def write_oxford17(root: Path, n: int = 30, size: int = 40) -> Path:
    "A miniature Oxford-17 tree in the official layout: images_256/image_XXXX.jpg, palette PNG labels_256/ (1 flower, 3 background, 0 void) for the first 24."
    rng = np.random.default_rng(1)
    (root/'images_256').mkdir(parents=True); (root/'labels_256').mkdir()
    yy, xx = np.mgrid[:size, :size]
    for k in range(1, n + 1):
        r2 = (yy - size / 2 + rng.integers(-4, 5)) ** 2 + (xx - size / 2 + rng.integers(-4, 5)) ** 2
        disc = r2 < (size / 3.5) ** 2
        img = np.empty((size, size, 3), np.uint8); img[:] = rng.integers(0, 110, 3); img[disc] = rng.integers(140, 256, 3)
        Image.fromarray(img).save(root/'images_256'/f'image_{k:04d}.jpg', quality=95)
        if k <= 24:
            lab = Image.fromarray(np.where(disc, 1, 3).astype(np.uint8), mode='P')
            lab.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * 756)
            lab.save(root/'labels_256'/f'image_{k:04d}.png')
    return root


def _run(out: Path, *args, timeout=170) -> subprocess.CompletedProcess:
    env = dict(os.environ, REDO_NB_CACHE=str(out.parent/'cache'), CUDA_VISIBLE_DEVICES='')
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], cwd=ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gpu_check')
    data = write_oxford17(tmp/'oxford17')
    t0 = time.time()
    r = _run(tmp/'out', '--dry', '--data', str(data))
    return r, tmp/'out', data, time.time() - t0


def test_dry_run_succeeds_in_every_stage_the_cpu_can_run(dry):
    r, out, data, seconds = dry
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    s = json.loads((out/'summary.json').read_text())
    assert s['mode'] == 'dry' and s['all_ok'] and s['failed'] == []
    st = s['stages']
    assert list(st) == ['env', 'bench', 'bench_compiled', 'tests', 'learn', 'curve']
    for name in ('env', 'bench', 'tests', 'learn', 'curve'):
        assert st[name]['status'] == 'ok', (name, st[name], (out/f'{name}.log').read_text()[-3000:])
        assert st[name]['traceback'] is None and st[name]['duration_s'] > 0
    # what cannot run here is skipped and said so
    assert st['bench_compiled']['status'] == 'skipped' and 'compile' in st['bench_compiled']['reason']
    assert set(s['dry_run_skips']) >= {'tests', 'bench', 'bench_compiled', 'learn'}
    assert seconds < 120, f'the dry run took {seconds:.0f}s'


def test_dry_run_writes_the_files_and_headlines(dry):
    r, out, data, _ = dry
    for f in ('env.json', 'train_step.json', 'tests.log', 'tests_junit.xml', 'learn_fit.json', 'learn.json', 'learn.png',
              'summary.json'):
        assert (out/f).is_file() and (out/f).stat().st_size > 0, f
    st = json.loads((out/'summary.json').read_text())['stages']
    env = json.loads((out/'env.json').read_text())
    assert env['cuda_available'] is False and env['torch'] and env['python']
    assert st['env']['headline']['torch'] == env['torch']
    bench = st['bench']['headline']
    assert bench['device'] == 'cpu' and {'tiny', 'cpu', 'infer'} <= set(bench)
    assert bench['tiny']['fast']['s_per_iter'] > 0 and bench['tiny']['plain']['per_s'] > 0
    tests = st['tests']['headline']  # the CUDA tests were collected, and each skipped for want of CUDA
    assert tests['tests'] >= 5 and tests['skipped'] == tests['tests'] and tests['failures'] == tests['errors'] == 0
    assert all('CUDA' in why for why in tests['skip_reasons'])
    fit = json.loads((out/'learn_fit.json').read_text())  # the learning run read the test's Oxford-17 tree
    assert fit['config']['root'] == str(data) and fit['config']['preset'] == 'paper' and fit['config']['dataset'] == 'oxford17'
    assert fit['iterations'] == 6 and fit['train_images'] == 20 and fit['val_images'] == 5
    curve = json.loads((out/'learn.json').read_text())
    assert [e['iter'] for e in curve['evaluations']] == [2, 4, 6]
    run_evals = [json.loads(l) for l in open(curve['metrics']) if '"eval"' in l]  # the curve is the run's own log
    assert [e['iou'] for e in curve['evaluations']] == [r['eval']['model']['image']['iou'] for r in run_evals]
    assert curve['best']['iou'] == max(e['iou'] for e in curve['evaluations'])
    assert [c['iter'] for c in curve['comparison']] == [500, 1000, 1500, 2000] and curve['points_compared'] == 0
    assert Image.open(out/'learn.png').size[0] > 400


def test_a_failing_stage_is_recorded_and_the_others_run(tmp_path):
    "No learning run before `curve`: it fails with its traceback on file, `env` before it still succeeds."
    r = _run(tmp_path/'out', '--dry', '--stages', 'env', 'curve', timeout=90)
    assert r.returncode == 1
    s = json.loads((tmp_path/'out'/'summary.json').read_text())
    assert s['stages']['env']['status'] == 'ok' and s['stages']['curve']['status'] == 'failed'
    assert s['failed'] == ['curve'] and not s['all_ok']
    assert 'no metrics.jsonl' in (tmp_path/'out'/s['stages']['curve']['traceback']).read_text()


def test_a_stage_past_its_time_box_is_killed_and_recorded(tmp_path):
    g = _gpu_check()
    res = g.Stage('slow', [sys.executable, '-c', 'import time; print("working", flush=True); time.sleep(60)'],
                  tmp_path, 2, dict(os.environ)).wait()
    assert res['status'] == 'timeout'  # killed at its 2 s box, not after the minute it asked for
    assert 'timed out after 2s' in (tmp_path/res['traceback']).read_text()


def test_the_device_call_is_in_the_docstring_and_fits_the_limits():
    g = _gpu_check()
    assert g.RUN_COMMAND in g.__doc__ and f"carry={g.RUN_CARRY!r}" in g.__doc__ and f'timeout_s={g.RUN_TIMEOUT_S}' in g.__doc__
    assert len(g.RUN_COMMAND) <= 2000 and len(g.rerun_command(list(g.STAGES))) <= 2000 and g.RUN_TIMEOUT_S <= 600
    assert f'--budget {g.GPU_BUDGET_S}' in g.RUN_COMMAND and g.GPU_BUDGET_S + 30 <= g.RUN_TIMEOUT_S  # ends before the call's limit
    assert '--budget 150' in g.rerun_command(['tests']) and 150 + 30 <= g.RERUN_TIMEOUT_S
    ignored = (ROOT/'.gitignore').read_text().splitlines()
    assert any(line.strip().rstrip('/') in ('.gpu_carry', '/.gpu_carry') for line in ignored)
