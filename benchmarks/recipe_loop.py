"""A small Algorithm-1 training loop on the package's networks, with the CPU-recipe options as named switches.

Used by the `learns_*.py` benchmarks while `redo_nb.train.Trainer` does not have these options yet.
Differences from `Trainer`: the time budget is CPU time of this process (`time.process_time`, fair on a
shared machine) instead of wall time; scores are computed on the test images at fixed CPU-minute
intervals; the options below (all off = the paper's Algorithm 1) exist only here.

Options (keys of `opts`, defaults = paper behaviour at CPU scale):
- `redraw`: 'single' (paper) | 'all' (released code: every region redrawn, D judges B*n fakes)
- `patch`: 'none' | 'mid' (PatchGAN head: SN 1x1 conv on D's 8x8 feature map, per-location hinge loss,
  weight `patchw`) | 'last' (D's own linear layer applied to each position of its 4x4 pre-pooling map)
- `hard`: 'soft' (paper) | 'st' (straight-through one-hot masks in the redraw)
- `T`: mask temperature: masks = sigmoid/softmax(logits / T) in training (T < 1 sharpens; argmax unchanged)
- `binw`: weight of a binarisation penalty mean(M (1 - M)) on F's masks
- `areamin`, `areaw`: mask prior, penalty areaw * sum_k relu(areamin - mean(M^k)) per image (no empty region)
- `aug`: DiffAugment (colour + translation) on real and fake before D
- `ema`: decay of an exponential moving average of F (scored beside F)
- `lrF_ramp`: CPU minutes over which F's learning rate ramps up from 0
"""
import copy, math, time
import torch, torch.nn as nn, torch.nn.functional as nnf
from redo_nb.models import ReDO
from redo_nb.layers import sn, init_orthogonal
from redo_nb.generative import logits_to_masks
from redo_nb.redraw import redraw, redraw_each, redraw_all
from redo_nb.losses import lambda_z, z_reconstruction_loss
from redo_nb.metrics import segmentation_scores, best_centred_disc
from redo_nb.data import to_float_image

DEFAULTS = dict(img_size=32, batch=16, size_z=32, lz=5.0, lr=2e-4, lrF=5e-5, wdF=1e-4, ch_f=16, ch_g=16, ch_d=32,
                self_attention=False, delta='shared', init_gain=0.8, redraw='single', patch='none', patchw=1.0,
                aug=False, hard='soft', T=1.0, binw=0.0, areamin=0.0, areaw=1.0, ema=0.0, lrF_ramp=0.0, collapse=0.1, check_every=100,
                check_until=1000, seed=0)

def diffaug(x):
    "DiffAugment-style colour (brightness, saturation, contrast) and translation by up to 1/8 (reflect padding)."
    B = x.shape[0]
    x = x + (torch.rand(B, 1, 1, 1) - 0.5)
    mu = x.mean(1, keepdim=True); x = (x - mu) * (torch.rand(B, 1, 1, 1) * 2) + mu
    mu = x.mean((1, 2, 3), keepdim=True); x = (x - mu) * (torch.rand(B, 1, 1, 1) + 0.5) + mu
    H = x.shape[-1]; s = H // 8
    xp = nnf.pad(x, (s, s, s, s), mode='reflect')
    dx, dy = torch.randint(0, 2 * s + 1, (2,)).tolist()
    return xp[:, :, dy:dy + H, dx:dx + H]

@torch.no_grad()
def score(F, images, labels, n, batch=128):
    "Foreground IoU of F per image / per dataset, and of F's own average mask (position-prior baseline)."
    was = F.training; F.eval()
    M = torch.cat([F(to_float_image(images[j:j + batch])) for j in range(0, len(images), batch)])
    F.train(was)
    avg = M.mean(0).argmax(0).expand(len(M), -1, -1)
    r = {}
    for p in ('image', 'dataset'):
        r[f'iou_{p}'] = segmentation_scores(M, labels, n_gt=n, protocol=p)['iou']
        r[f'avgmask_{p}'] = segmentation_scores(avg, labels, n_gt=n, protocol=p)['iou']
    r['areas'] = [round(v, 3) for v in M.mean((0, 2, 3)).tolist()]
    return r

def disc_baseline(labels):
    "Best centred disc IoU under both protocols."
    return {p: best_centred_disc(labels, protocol=p)[1]['iou'] for p in ('image', 'dataset')}

def train_recipe(train_images, test_images, test_labels, n, minutes, opts=None, eval_every=0.5, log=print):
    "Train on uint8 `train_images` for `minutes` CPU minutes; returns dict(curve, final, model, opts)."
    o = {**DEFAULTS, **(opts or {})}
    unknown = set(o) - set(DEFAULTS)
    if unknown: raise ValueError(f'train_recipe: unknown options {sorted(unknown)}')
    size, nz = o['img_size'], o['size_z']
    if train_images.shape[-1] != size: raise ValueError(f'train images are {train_images.shape[-1]} px, img_size={size}')
    lam = lambda_z(n, nz, o['lz'])
    fixed = train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(1))[:64]]
    st = dict(restarts=0)

    def build():
        torch.manual_seed(o['seed'] + 1000 * st['restarts'])
        m = ReDO(n, size, nz, o['ch_f'], o['ch_g'], o['ch_d'], self_attention=o['self_attention'],
                 delta=o['delta'], init_gain=o['init_gain'])
        head, j = None, None
        if o['patch'] == 'mid':  # the trunk block whose output is 8x8
            j = int(math.log2(size // 8)) - 1 + int(o['self_attention'])
            with torch.no_grad(): c = m.D.trunk.layers[:j + 1](torch.zeros(1, 3, size, size)).shape[1]
            head = init_orthogonal(sn(nn.Conv2d(c, 1, 1)), o['init_gain'])
        b = (0.0, 0.9)
        dpar = list(m.D.parameters()) + (list(head.parameters()) if head is not None else [])
        own = {id(p) for p in m.D.parameters()}
        opts_ = dict(F=torch.optim.Adam(m.F.parameters(), o['lrF'], betas=b, weight_decay=o['wdF']),
                     G=torch.optim.Adam(m.G.parameters(), o['lr'], betas=b),
                     D=torch.optim.Adam(dpar, o['lr'], betas=b),
                     delta=torch.optim.Adam([p for p in m.delta.parameters() if id(p) not in own], o['lr'], betas=b))
        return m, head, j, opts_, dpar
    m, head, mid_j, optim, dpar = build()
    Fema = copy.deepcopy(m.F) if o['ema'] else None

    def batch(): return to_float_image(train_images[torch.randint(len(train_images), (o['batch'],))])

    def D_all(x):
        "Global scores (B,), per-location scores (B, P) or None, pooled trunk features (for a shared delta)."
        if o['aug']: x = diffaug(x)
        h, mid = x, None
        for k, layer in enumerate(m.D.trunk.layers):
            h = layer(h)
            if k == mid_j: mid = h
        feats = h.sum((2, 3))
        g = m.D.linear(feats).squeeze(1)
        p = (m.D.linear(h.permute(0, 2, 3, 1)).flatten(1) if o['patch'] == 'last' else
             head(nnf.relu(mid)).flatten(1) if o['patch'] == 'mid' else None)
        return g, p, feats

    def masks(I):
        M = logits_to_masks(m.F(I, return_logits=True)[1] / o['T']) if o['T'] != 1 else m.F(I)
        if o['hard'] == 'st':
            H = nnf.one_hot(M.argmax(1), n).permute(0, 3, 1, 2).to(M.dtype)
            M = H + M - M.detach()
        return M

    def fakes(I):
        "(fakes for D, image for delta, z, i, M)"
        B = len(I); M = masks(I)
        if o['redraw'] == 'single':
            i = torch.randint(n, (B,)); z = torch.randn(B, nz)
            fk = redraw(I, M, m.G(M, z, i), i)
            return fk, fk, z, i, M
        z = torch.randn(B, n, nz); V = m.G(M, z)
        return redraw_each(I, M, V).flatten(0, 1), redraw_all(M, V), z, None, M

    curve, t0, w0, it, next_eval = [], time.process_time(), time.time(), 0, 0.0
    while True:
        mins = (time.process_time() - t0) / 60
        if mins >= next_eval or mins >= minutes:
            rec = dict(it=it, cpu_min=round(mins, 2), wall_min=round((time.time() - w0) / 60, 2), restarts=st['restarts'],
                       **score(m.F, test_images, test_labels, n))
            if Fema is not None: rec.update({f'ema_{k}': v for k, v in score(Fema, test_images, test_labels, n).items() if k.startswith('iou')})
            rec = {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}
            curve.append(rec); log(rec); next_eval += eval_every
            if mins >= minutes: break
        if o['collapse'] and it and it % o['check_every'] == 0 and it <= o['check_until']:
            with torch.no_grad():
                m.F.eval(); areas = m.F(to_float_image(fixed)).mean((0, 2, 3)); m.F.train()
            if areas.min() < o['collapse']:  # the paper's automatic restart on early collapse
                st['restarts'] += 1; log(dict(event='restart', it=it, areas=areas.tolist()))
                m, head, mid_j, optim, dpar = build(); Fema = copy.deepcopy(m.F) if o['ema'] else None; it = 0
                continue
        if o['lrF_ramp']:
            for grp in optim['F'].param_groups: grp['lr'] = o['lrF'] * min(1.0, mins / o['lrF_ramp'])
        # DiscriminatorUpdate
        I_real, I_input = batch(), batch()
        with torch.no_grad(): fk = fakes(I_input)[0]
        g, p, _ = D_all(torch.cat([I_real, fk]))
        B = len(I_real)
        loss_d = nnf.relu(1 - g[:B]).mean() + nnf.relu(1 + g[B:]).mean()
        if p is not None: loss_d = loss_d + o['patchw'] * (nnf.relu(1 - p[:B]).mean() + nnf.relu(1 + p[B:]).mean())
        optim['D'].zero_grad(set_to_none=True); loss_d.backward(); optim['D'].step()
        # GeneratorUpdate (F, G_k, delta)
        I = batch(); fk, for_delta, z, i, M = fakes(I)
        for q in dpar: q.requires_grad_(False)
        g, p, feats = D_all(fk)
        loss = -g.mean() - (o['patchw'] * p.mean() if p is not None else 0)
        if o['redraw'] == 'single':
            z_hat = (m.delta.forward_features(feats) if o['delta'] == 'shared' else m.delta(fk))[torch.arange(B), i]
        else:
            z_hat = m.delta(for_delta)
        loss = loss + lam * z_reconstruction_loss(z_hat, z)
        if o['binw']: loss = loss + o['binw'] * (M * (1 - M)).mean()
        if o['areamin']:  # a simple mask prior p(M): every region covers at least `areamin` of each image
            loss = loss + o['areaw'] * nnf.relu(o['areamin'] - M.mean((2, 3))).sum(1).mean()
        for k in ('F', 'G', 'delta'): optim[k].zero_grad(set_to_none=True)
        loss.backward()
        for q in dpar: q.requires_grad_(True)
        for k in ('F', 'G', 'delta'): optim[k].step()
        if Fema is not None:
            with torch.no_grad():
                for pe, pp in zip(Fema.parameters(), m.F.parameters()): pe.lerp_(pp, 1 - o['ema'])
        it += 1
    return dict(curve=curve, final=curve[-1], model=m, F_ema=Fema, opts=o, restarts=st['restarts'])

# The recommended CPU recipe (see benchmarks/RESULTS.md): no option gave a robust gain, so it is the `cpu` preset
# (DEFAULTS); img_size and the budget are set per benchmark. The most-tried variant was
# dict(redraw='single', patch='mid', hard='st', lrF=1e-4) (lab run q04, not reproducible).
CPU_RECIPE = {}

def run_benchmark(name, train_images, test_images, test_labels, n, minutes, opts, targets=None, eval_every=0.5,
                  threads=1, out_dir=None):
    "Train, print IoU vs CPU minutes beside the baselines, write results/<name>.json and a curve PNG; returns the result."
    import json, pathlib
    torch.set_num_threads(threads)
    out_dir = pathlib.Path(out_dir or pathlib.Path(__file__).parent / 'results'); out_dir.mkdir(parents=True, exist_ok=True)
    disc = disc_baseline(test_labels) if n == 2 else None
    print(f'{name}: {len(train_images)} training / {len(test_images)} scored images, {train_images.shape[-1]} px, n={n}, '
          f'{minutes} CPU min, options {opts}')
    if disc: print(f"centred disc (oracle radius): IoU per-image {disc['image']:.3f}, per-dataset {disc['dataset']:.3f}")
    print(f"{'cpu min':>8}{'wall':>7}{'iters':>7}{'IoU/ds':>8}{'IoU/img':>8}{'avgM/ds':>8}{'avgM/img':>9}  areas")
    fmt = lambda r: (f"{r['cpu_min']:8.2f}{r['wall_min']:7.1f}{r['it']:7d}{r['iou_dataset']:8.3f}{r['iou_image']:8.3f}"
                     f"{r['avgmask_dataset']:8.3f}{r['avgmask_image']:9.3f}  {r['areas']}" + (f"  (restarts {r['restarts']})" if r['restarts'] else ''))
    res = train_recipe(train_images, test_images, test_labels, n, minutes, opts, eval_every,
                       log=lambda r: print(fmt(r) if 'cpu_min' in r else r, flush=True))
    best = max(res['curve'], key=lambda r: r['iou_dataset'])
    final = res['final']
    out = dict(name=name, options=res['opts'], minutes=minutes, threads=threads, centred_disc=disc, curve=res['curve'],
               final=final, best=best, targets=targets or {})
    if targets:
        out['reached'] = {k: final[f'iou_{k}'] >= v for k, v in targets.items()}
        print('targets (final F):', {k: f"{final[f'iou_{k}']:.3f} vs {v}" for k, v in targets.items()})
    (out_dir / f'{name}.json').write_text(json.dumps(out, indent=1))
    try:
        import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
        c = res['curve']; x = [r['cpu_min'] for r in c]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, style in (('iou_dataset', '-'), ('iou_image', '--'), ('avgmask_dataset', ':')):
            ax.plot(x, [r[k] for r in c], style, label=k)
        if disc: ax.axhline(disc['dataset'], color='grey', lw=0.8, label='centred disc')
        for k, v in (targets or {}).items(): ax.axhline(v, color='red', lw=0.5)
        ax.set_xlabel('CPU minutes (1 thread)'); ax.set_ylabel('foreground IoU'); ax.set_title(name); ax.legend(fontsize=7)
        fig.tight_layout(); fig.savefig(out_dir / f'{name}.png', dpi=90); plt.close(fig)
    except Exception as e: print('no curve picture:', e)
    return out
