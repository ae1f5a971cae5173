"Refinement on image edges (redo_nb.refine): it repairs roughly right masks, keeps right ones, and works on real photos."
from pathlib import Path
import pytest
import torch
import torch.nn.functional as nnf
from redo_nb.builtin import make_synthetic
from redo_nb.photos import oxford17_flowers
from redo_nb.metrics import best_centred_disc, centred_disc, masks_to_labels, segmentation_scores
from redo_nb.refine import refine_masks

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'

def _iou(M, gt):
    return segmentation_scores(masks_to_labels(M), gt, protocol='dataset')['iou']

def _two(m):
    return torch.cat([m, 1 - m], 1)

def test_refine_repairs_blurred_shifted_masks():
    d = make_synthetic(64, size=32, seed=5)
    obj = (d.masks == 1).float()[:, None]
    spoiled = _two(nnf.avg_pool2d(obj, 5, 1, 2, count_include_pad=False).roll(2, -1))
    before, after = _iou(spoiled, d.masks.long()), _iou(refine_masks(spoiled, d.images), d.masks.long())
    assert after > before + 0.1, (before, after)
    assert _iou(refine_masks(_two(obj), d.images), d.masks.long()) > 0.95

def test_refine_keeps_an_empty_region_empty():
    "It moves boundaries; it does not invent a region F left empty (n = 3, third region all zero)."
    d = make_synthetic(16, size=32, seed=6)
    obj = (d.masks == 1).float()[:, None]
    M = torch.cat([obj * 0.9 + 0.05, (1 - obj) * 0.9 + 0.05, torch.zeros_like(obj)], 1)
    M = M / M.sum(1, keepdim=True)
    R = refine_masks(M, d.images)
    assert R[:, 2].max() < 0.01 and torch.allclose(R.sum(1), torch.ones_like(R[:, 0]), atol=1e-5)

@pytest.mark.skipif(not (SHARED / 'oxford17_flowers').is_dir(), reason=f"Oxford-17 not found at {SHARED}")
def test_refine_on_oxford17_photos_beats_the_disc_it_starts_from():
    d = oxford17_flowers(SHARED / 'oxford17_flowers', size=64, cache=False).labelled_subset()
    idx = torch.arange(0, len(d), max(1, len(d) // 120))
    images, gt = d.images[idx], d.masks[idx].long()
    radius, _ = best_centred_disc(gt)
    disc = centred_disc(gt.shape[-2:], radius).float()
    M = (torch.stack([disc, 1 - disc])[None] * 0.8 + 0.1).expand(len(idx), -1, -1, -1)
    raw = segmentation_scores(centred_disc(gt.shape, radius), gt, protocol='dataset')['iou']
    refined = _iou(refine_masks(M.contiguous(), images), gt)
    assert refined > raw + 0.1, (raw, refined)

@pytest.mark.skipif(not (SHARED / 'oxford17_flowers').is_dir(), reason=f"Oxford-17 not found at {SHARED}")
def test_the_average_mask_in_the_seed_corrects_misplaced_masks_on_oxford17_photos():
    "Where F puts the object wrongly in some images, blending in the average mask (mean_weight) lets colour and edges win."
    d = oxford17_flowers(SHARED / 'oxford17_flowers', size=64, cache=False).labelled_subset()
    idx = torch.arange(0, len(d), max(1, len(d) // 120))
    images, gt = d.images[idx], d.masks[idx].long()
    radius, _ = best_centred_disc(gt)
    disc = centred_disc(gt.shape[-2:], radius).float()
    M = (torch.stack([disc, 1 - disc])[None] * 0.8 + 0.1).repeat(len(idx), 1, 1, 1)
    M[1::3] = M[1::3].roll((16, 16), (-2, -1))  # a third of the images: the "object" pushed into a corner
    alone, blend = (_iou(refine_masks(M, images, mean_weight=w), gt) for w in (0., 0.75))
    assert blend > alone + 0.02, (alone, blend)
