"""Cross-module checks of `redo_nb.viz`: headless use with the real model, run folders, optional ipywidgets."""
import json, os, subprocess, sys

import matplotlib
matplotlib.use('Agg')  # as on a server without a display
import matplotlib.pyplot as plt
import pytest
import torch

from redo_nb.models import ReDO
from redo_nb.viz import explorer, load_metrics, plot_redraws, plot_training_curves, show_masks


@pytest.fixture(scope='module')
def model_and_images():
    torch.manual_seed(0)
    model = ReDO(n=3, img_size=32, size_z=4, ch_f=8, ch_g=8, ch_d=8)
    return model, torch.rand(2, 3, 32, 32) * 2 - 1


def test_figures_are_returned_closed_and_saveable(model_and_images, tmp_path):
    "Library plots never leave pyplot figures open (no windows in scripts, no leaks in loops)."
    model, images = model_and_images
    plt.close('all')
    gt = torch.zeros(2, 32, 32, dtype=torch.long)
    fig = plot_redraws(model, images, gt, n_z=2)
    assert len(fig.axes) == 2 * (1 + 1 + 3 + 3 * 2)
    fig.savefig(tmp_path/'fig2.png')
    with torch.no_grad():
        show_masks(images, model.masks(images)).savefig(tmp_path/'masks.png')
    assert plt.get_fignums() == []
    assert (tmp_path/'fig2.png').stat().st_size > 1000


def test_plot_redraws_keeps_the_model_mode_and_its_weights(model_and_images):
    model, images = model_and_images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    plot_redraws(model, images, n_z=1)
    assert model.training
    model.eval()
    plot_redraws(model, images, n_z=1)
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), 'plotting must not change the model'


def test_training_curves_from_a_run_folder(tmp_path):
    lines = [json.dumps(dict(iter=i, minutes=i / 60, loss_d=1.0, loss_g=0.5, area_0=0.3, area_1=0.7)) for i in range(5)]
    lines.append(json.dumps(dict(iter=5, val_iou=0.5, val_iou_dataset=0.45)))
    (tmp_path/'metrics.jsonl').write_text('\n'.join(lines) + '\n{"iter": 6, "loss')  # a run still writing
    assert len(load_metrics(tmp_path)) == 6
    fig = plot_training_curves(tmp_path)
    assert [ax.get_title() for ax in fig.axes] == ['losses', 'mask areas', 'validation']
    assert sorted(l.get_label() for l in fig.axes[2].lines) == ['val_iou', 'val_iou_dataset']
    with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
        load_metrics(tmp_path/'no_such_run')


def test_library_imports_without_ipywidgets():
    "ipywidgets is optional: only `explorer` needs it, and its error says what to install."
    code = ("import sys; sys.modules['ipywidgets'] = None\n"
            "import torch, redo_nb.viz as viz\n"
            "assert viz.to_numpy_image(torch.zeros(3, 2, 2)).shape == (2, 2, 3)\n"
            "try:\n    viz.explorer(None, None)\n"
            "except ImportError as e:\n    print(e)\n")
    env = dict(os.environ, MPLBACKEND='Agg')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'pip install ipywidgets' in res.stdout


def test_explorer_builds_and_redraws(model_and_images):
    pytest.importorskip('ipywidgets')
    model, images = model_and_images
    ui = explorer(model, images, n_sliders=2)
    (pick, region, seed, *sliders), view = ui.children[0].children, ui.children[1]
    assert len(sliders) == 2 and [o[1] for o in region.options] == [0, 1, 2]
    first = view.value
    region.value = 2
    assert view.value != first and view.value[:4] == b'\x89PNG'
