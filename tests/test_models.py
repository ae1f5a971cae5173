"Cross-module checks of the networks: redo_nb.models with the real masks, redraw and objectives."
import copy

import torch

from redo_nb.generative import check_masks
from redo_nb.losses import discriminator_objective, generator_objective, lambda_z
from redo_nb.models import ReDO
from redo_nb.redraw import redraw

SMALL = dict(img_size=32, size_z=8, ch_f=4, ch_g=4, ch_d=8, self_attention=False)


def _images(B=4, size=32, seed=0):
    return torch.rand(B, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_algorithm_1_step_with_shared_trunk():
    "Generator step: gradients reach F, every used G_k and delta's heads, none reach D when it is frozen; D step: only D."
    torch.manual_seed(0)
    model = ReDO(n=3, delta='shared', **SMALL)
    I = _images(6)
    out = model.generate(I, i=torch.tensor([0, 1, 2, 0, 1, 2]), generator=torch.Generator().manual_seed(1))
    check_masks(out['M'])
    for p in model.D.parameters(): p.requires_grad_(False)
    d_fake, feats = model.D(out['fake'], return_features=True)
    z_hat = model.delta.forward_features(feats)[torch.arange(6), out['i']]
    loss, _ = generator_objective(d_fake, z_hat, out['z'], lambda_z(3, 8))
    loss.backward()
    for p in model.D.parameters(): p.requires_grad_(True)
    for net in (model.F, model.delta, *model.G.generators):
        assert all(p.grad is not None for p in net.parameters()), net.__class__.__name__
    assert all(p.grad is None for p in model.D.parameters())
    model.zero_grad(set_to_none=True)
    d_loss, _ = discriminator_objective(model.D(_images(6, seed=2)), model.D(out['fake'].detach()))
    d_loss.backward()
    assert all(p.grad is not None for p in model.D.parameters())
    assert all(p.grad is None for p in model.F.parameters())


def test_state_dict_round_trip_and_copy_keep_the_shared_trunk():
    torch.manual_seed(0)
    model = ReDO(n=2, delta='shared', **SMALL).eval()
    assert not any(k.startswith('delta.trunk') for k in model.state_dict())
    clone = ReDO(n=2, delta='shared', init_gain=None, **SMALL).eval()
    clone.load_state_dict(model.state_dict())
    I = _images()
    torch.testing.assert_close(clone.masks(I), model.masks(I))
    torch.testing.assert_close(clone.delta(I), model.delta(I))
    twin = copy.deepcopy(model)
    assert twin.delta._shared[0] is twin.D and twin.D is not model.D


def test_generate_is_reproducible_and_redraws_only_region_i():
    torch.manual_seed(0)
    model = ReDO(n=3, delta='separate', **SMALL).eval()
    I = _images()
    a = model.generate(I, generator=torch.Generator().manual_seed(5))
    b = model.generate(I, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a['fake'], b['fake'])
    assert torch.equal(a['i'], b['i']) and torch.equal(a['z'], b['z'])
    torch.testing.assert_close(a['fake'], redraw(I, a['M'], a['V'], a['i']))
    # released variant: `each[:, k]` is the image with region k redrawn, `fake` the fully generated image
    out = model.generate(I, mode='all')
    for k in range(3):
        torch.testing.assert_close(out['each'][:, k], redraw(I, out['M'], out['V'][:, k], torch.full((4,), k)))
    torch.testing.assert_close(out['fake'], (out['M'].unsqueeze(2) * out['V']).sum(1))
