"Cross-module checks of the method's building blocks: masks -> redraw -> objectives -> metrics."
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from redo_nb.generative import IGNORE, compose, sample_mask_prior, sample_region_pixels
from redo_nb.losses import discriminator_objective, generator_objective, lambda_z
from redo_nb.metrics import best_centred_disc, segmentation_scores
from redo_nb.redraw import redraw, redraw_all, redraw_each, region_mask
from redo_nb.train import Trainer

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'oxford17_flowers' / 'labels_256'


def test_objectives_by_hand():
    "The hinge losses and the z-reconstruction term of Algorithm 1 on numbers small enough to add up by hand."
    loss, parts = discriminator_objective(torch.tensor([2., 0.5, -1.]), torch.tensor([-3., 0.]))
    # real: relu(1 - d) = 0, 0.5, 2 (mean 5/6); fake: relu(1 + d) = 0, 1 (mean 1/2)
    torch.testing.assert_close(parts['real'], torch.tensor(5 / 6))
    torch.testing.assert_close(parts['fake'], torch.tensor(0.5))
    torch.testing.assert_close(loss, torch.tensor(5 / 6 + 0.5))
    z, z_hat = torch.tensor([[0., 1.], [2., -1.]]), torch.tensor([[1., 1.], [2., 1.]])  # squared errors 1 and 4
    loss, parts = generator_objective(torch.tensor([1., -1., 3.]), z_hat, z, 0.5)
    torch.testing.assert_close(parts['adv'], torch.tensor(-1.))
    torch.testing.assert_close(parts['z'], torch.tensor(2.5))
    torch.testing.assert_close(loss, torch.tensor(-1. + 0.5 * 2.5))
    assert lambda_z(2, 32) == 5 / 64 and lambda_z(2, 8, 20.) == 1.25  # the paper's 5 / (n size_z); the cpu preset's 20


def test_training_steps_compute_algorithm_1_with_the_real_networks(tiny_config, one_thread):
    """One generator step and one discriminator step of the `Trainer` (the real ReDO networks at tiny sizes), recomputed
    here from the same draws: F's masks, G_i's region, the redraw, D and delta's heads, the objectives; the generator step
    moves F, G and delta and no gradient reaches D; the discriminator step moves D alone."""
    t = Trainer(tiny_config(delta='shared'))  # the paper's delta
    B, n, size_z = t.cfg.batch_size, t.cfg.n, t.cfg.size_z
    lam = 5 / (n * size_z)  # the paper's lambda_z
    m = copy.deepcopy(t.model)  # the networks before the step (train mode: spectral norms iterate as in the step)
    g = torch.Generator().set_state(t.gen.get_state())
    I = t.images[torch.randint(len(t.images), (B,), generator=g)].float() / 127.5 - 1
    i, z = torch.randint(n, (B,), generator=g), torch.randn(B, size_z, generator=g)
    logs = t.generator_step()
    with torch.no_grad():
        M = m.F(I)
        M_i = M[torch.arange(B), i].unsqueeze(1)
        fake = (1 - M_i) * I + M_i * m.G(M, z, i)
        d, feats = m.D(fake, return_features=True)
        z_hat = m.delta.heads(feats).view(B, n, size_z)[torch.arange(B), i]
    rec = (z_hat - z).pow(2).sum(1).mean()
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    close(logs['g_adv'], -d.mean())
    close(logs['g_z'], rec)
    close(logs['loss_g'], -d.mean() + lam * rec)
    for k in range(n): close(logs[f'area{k}'], M[:, k].mean())
    assert all(p.grad is not None for p in t.model.F.parameters())
    for k, G_k in enumerate(t.model.G.generators):  # a generator gets a gradient when its region was drawn
        assert all((p.grad is not None) == bool((i == k).any()) for p in G_k.parameters()), (k, i)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.model.delta.heads.parameters())
    assert all(p.grad is None for p in t.model.D.parameters())
    for name in ('F', 'G', 'D'):
        moved = [not torch.equal(a, b) for a, b in zip(getattr(m, name).parameters(), getattr(t.model, name).parameters())]
        assert any(moved) == (name != 'D'), name

    m = copy.deepcopy(t.model)
    g = torch.Generator().set_state(t.gen.get_state())
    real, I = (t.images[torch.randint(len(t.images), (B,), generator=g)].float() / 127.5 - 1 for _ in range(2))
    i, z = torch.randint(n, (B,), generator=g), torch.randn(B, size_z, generator=g)
    logs = t.discriminator_step()
    with torch.no_grad():
        M = m.F(I)
        M_i = M[torch.arange(B), i].unsqueeze(1)
        d = m.D(torch.cat([real, (1 - M_i) * I + M_i * m.G(M, z, i)]))
    close(logs['d_real'], torch.relu(1 - d[:B]).mean())
    close(logs['d_fake'], torch.relu(1 + d[B:]).mean())
    close(logs['loss_d'], torch.relu(1 - d[:B]).mean() + torch.relu(1 + d[B:]).mean())
    for name in ('F', 'G', 'D'):
        moved = [not torch.equal(a, b) for a, b in zip(getattr(m, name).parameters(), getattr(t.model, name).parameters())]
        assert any(moved) == (name == 'D'), name


def test_redraw_variants_agree_on_hard_masks():
    g = torch.Generator().manual_seed(1)
    B, n, H = 3, 3, 16
    M = sample_mask_prior(B, n, H, generator=g)
    V = sample_region_pixels(B, n, H, generator=g)
    I = compose(M, sample_region_pixels(B, n, H, generator=g))
    each = redraw_each(I, M, V)
    for k in range(n):
        i = torch.full((B,), k)
        assert torch.equal(each[:, k], redraw(I, M, V[:, k], i))
        keep = region_mask(M, i).expand_as(I) == 0
        assert torch.equal(each[:, k][keep], I[keep])
    # redrawing every region in turn leaves nothing of I: the fully generated image, each pixel from its region's V
    x = I
    for k in range(n): x = redraw(x, M, V[:, k], torch.full((B,), k))
    label = M.argmax(1)[:, None, None].expand(B, 1, 3, H, H)
    by_label = V.gather(1, label).squeeze(1)
    assert torch.equal(x, by_label) and torch.equal(redraw_all(M, V), by_label)


def test_redraw_all_on_soft_masks_by_hand():
    "redraw_all mixes the regions' pixels by the masks' weights: 0.25 * 1 + 0.75 * (-1) = -0.5 at every pixel."
    M = torch.stack([torch.full((2, 2), 0.25), torch.full((2, 2), 0.75)])[None]
    V = torch.stack([torch.ones(3, 2, 2), -torch.ones(3, 2, 2)])[None]
    torch.testing.assert_close(redraw_all(M, V), torch.full((1, 3, 2, 2), -0.5))


def test_prior_masks_score_perfectly_against_their_own_labels():
    M = sample_mask_prior(6, 3, 12, generator=torch.Generator().manual_seed(2))
    labels = M.argmax(1)
    perm = torch.tensor([1, 2, 0])
    for protocol in ('image', 'dataset'):
        s = segmentation_scores(M[:, perm], labels, n_gt=3, protocol=protocol)
        assert s['acc'] == 1.0 and s['miou'] == 1.0


@pytest.mark.skipif(not DATA.is_dir(), reason=f"Oxford-17 labels not found at {DATA} (../shared/data is only present in the dev setup)")
def test_oxford17_centred_disc_baseline_64px():
    "The reference notes report a best centred-disc IoU of 0.596 on the 846 labelled Oxford-17 images at 64 px."
    from PIL import Image
    raw = np.stack([np.array(Image.open(f).resize((64, 64), Image.NEAREST)) for f in sorted(DATA.glob('*.png'))])
    gt = torch.from_numpy(np.where(raw == 0, IGNORE, (raw == 1).astype(np.int64))).long()
    _, s = best_centred_disc(gt, radii=[0.6, 0.65, 0.7, 0.75, 0.8])
    assert len(gt) == 846
    assert abs(s['iou'] - 0.596) < 0.01, s
