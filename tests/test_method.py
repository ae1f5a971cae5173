"Cross-module checks of the method's building blocks: masks -> redraw -> objectives -> metrics."
from pathlib import Path

import numpy as np
import pytest
import torch

from redo_nb.generative import IGNORE, check_masks, compose, logits_to_masks, sample_mask_prior, sample_region_pixels
from redo_nb.losses import discriminator_objective, generator_objective, lambda_z
from redo_nb.metrics import best_centred_disc, segmentation_scores
from redo_nb.redraw import redraw, redraw_all, redraw_each, region_mask, sample_regions

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'oxford17_flowers' / 'labels_256'


def test_generator_step_reaches_every_learner():
    "One generator step of Algorithm 1 with stand-in linear networks: gradients reach F, G and delta, not D's input image."
    g = torch.Generator().manual_seed(0)
    B, n, size_z, H = 4, 3, 5, 8
    I = torch.rand(B, 3, H, H, generator=g) * 2 - 1
    logits = torch.randn(B, n, H, H, generator=g, requires_grad=True)    # stands for F(I)
    G = torch.nn.Linear(size_z, 3 * H * H)                               # stands for G_i
    delta = torch.nn.Linear(3 * H * H, size_z)
    D = torch.nn.Linear(3 * H * H, 1)
    M = check_masks(logits_to_masks(logits))
    i = sample_regions(B, n, generator=g)
    z = torch.randn(B, size_z, generator=g)
    fake = redraw(I, M, torch.tanh(G(z)).view(B, 3, H, H), i)
    loss, parts = generator_objective(D(fake.flatten(1)), delta(fake.flatten(1)), z, lambda_z(n, size_z))
    loss.backward()
    assert logits.grad.abs().sum() > 0 and G.weight.grad.abs().sum() > 0 and delta.weight.grad.abs().sum() > 0
    assert parts['z'] > 0
    d_loss, _ = discriminator_objective(D(I.flatten(1)), D(fake.detach().flatten(1)))
    assert d_loss.item() >= 0


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
    torch.testing.assert_close(redraw_all(M, V), compose(M, V))


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
