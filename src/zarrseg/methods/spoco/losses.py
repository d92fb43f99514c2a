"""SPOCO losses (thesis ch. 3, Eq. 3.1-3.9) as pure functions of tensors.

Shapes: embeddings ``emb`` are (D, N) (one image, pixels flattened), ``labels`` (N,) hold
consecutive object indices 1..C for labelled pixels and 0 for unlabelled ones (``index_objects``
makes them from any id image). Every term is computed in float32.

Anchors of the differentiable instance selection (Eq. 3.3) are the embeddings of random pixels
inside each object, as the thesis says (the authors' code uses the object's mean embedding).
"""

from __future__ import annotations

import math

import torch

from .params import Weights  # noqa: F401 (a parameter class: defined without torch)
from .soft_dice import soft_dice

EPS = 1e-12


def index_objects(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map object ids (0 = unlabelled) to consecutive indices 1..C; returns (indices, C)."""
    ids, inverse = torch.unique(labels, return_inverse=True)
    if len(ids) and ids[0] == 0:
        return inverse, len(ids) - 1
    return inverse + 1, len(ids)


def one_hot(labels: torch.Tensor, n_objects: int, dtype: torch.dtype) -> torch.Tensor:
    """(C + 1, N) indicator rows: row 0 the unlabelled pixels, row k object k. Per-object sums are
    then matrix products, whose backward is one too (gathers by label back up through slow
    accumulating scatters on the CPU)."""
    return (labels[None, :] == torch.arange(n_objects + 1, device=labels.device)[:, None]).to(dtype)


def cluster_means(emb: torch.Tensor, labels: torch.Tensor, n_objects: int) -> torch.Tensor:
    """Mean embedding mu_k of each object k = 1..C: (C, D)."""
    members = one_hot(labels, n_objects, emb.dtype)[1:]
    return (members @ emb.T) / members.sum(1)[:, None].clamp_min(1.0)


def pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (M, N) between rows of ``a`` (M, D) and ``b`` (N, D), safe to differentiate at 0."""
    return squared_distance(a, b).clamp_min(EPS).sqrt()


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (M, N) (expanded form: no (M, N, D) temporary)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def pull_term(emb: torch.Tensor, labels: torch.Tensor, means: torch.Tensor, delta_v: float) -> torch.Tensor:
    """Eq. 3.1, pull force: mean over objects of the mean hinged squared distance [||mu_k - e_i|| - dv]_+^2."""
    n = means.shape[0]
    if n == 0:
        return emb.new_zeros(())
    members = one_hot(labels, n, emb.dtype)[1:]  # (C, N)
    centre = means.T @ members  # (D, N): mu_k at the pixels of object k, 0 at unlabelled ones
    dist = (emb - centre).pow(2).sum(0).clamp_min(EPS).sqrt()
    hinge = (dist - delta_v).clamp_min(0.0) ** 2  # unlabelled pixels: weight 0 below
    return ((members @ hinge) / members.sum(1).clamp_min(1.0)).mean()


def push_term(means: torch.Tensor, delta_d: float) -> torch.Tensor:
    """Eq. 3.2, push force: mean over ordered pairs k != l of [2 dd - ||mu_k - mu_l||]_+^2 (0 for C < 2)."""
    n = means.shape[0]
    if n < 2:
        return means.new_zeros(())
    i, j = torch.triu_indices(n, n, offset=1, device=means.device)
    dist = (means[i] - means[j]).pow(2).sum(1).clamp_min(EPS).sqrt()
    # every unordered pair stands for two ordered ones: sum 2x over C (C - 1) pairs = the mean
    return ((2 * delta_d - dist).clamp_min(0.0) ** 2).mean()


def regulariser(means: torch.Tensor) -> torch.Tensor:
    """The footnote to Eq. 3.1-3.2: (1/C) sum_k ||mu_k||, keeps embeddings bounded."""
    if means.shape[0] == 0:
        return means.new_zeros(())
    return means.pow(2).sum(1).clamp_min(EPS).sqrt().mean()


def kernel_variance(delta_v: float, threshold: float) -> float:
    """sigma^2 of the Gaussian kernel (Eq. 3.3) whose value at distance dv is ``threshold``:
    exp(-dv^2 / (2 sigma^2)) = t  =>  sigma^2 = -dv^2 / (2 ln t)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"kernel threshold must be in (0, 1), got {threshold}")
    return -(delta_v**2) / (2.0 * math.log(threshold))


def soft_masks(emb: torch.Tensor, anchors: torch.Tensor, sigma2: float) -> torch.Tensor:
    """Eq. 3.3, differentiable instance selection: phi(e_i, a_k) = exp(-||e_i - a_k||^2 / (2 sigma^2)), (K, N)."""
    return torch.exp(-squared_distance(anchors, emb.T) / (2.0 * sigma2))


def dice_loss(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3.5 per row: 1 - 2 sum p q / (sum p^2 + sum q^2); (K, N) -> (K,)."""
    return 1.0 - 2.0 * (p * q).sum(-1) / ((p * p).sum(-1) + (q * q).sum(-1)).clamp_min(eps)


def random_pixels(mask: torch.Tensor, labels: torch.Tensor, n_objects: int, generator: torch.Generator) -> torch.Tensor:
    """One random pixel index per object 1..C (labels restricted to ``mask``): (C,)."""
    u = torch.rand(labels.shape, generator=generator).to(labels.device)
    u = torch.where(mask & (labels > 0), u, torch.full_like(u, -1.0))
    best = torch.full((n_objects + 1,), -1.0, device=labels.device).scatter_reduce(0, labels, u, "amax")
    hit = (u == best[labels]) & (u >= 0)
    out = torch.zeros(n_objects + 1, dtype=torch.long, device=labels.device)
    out[labels[hit]] = torch.nonzero(hit).squeeze(1)
    return out[1:]


def instance_term(
    emb: torch.Tensor,
    labels: torch.Tensor,
    n_objects: int,
    sigma2: float,
    anchors: torch.Tensor,
) -> torch.Tensor:
    """Eq. 3.4: (1/C) sum_k Dice(S_k, I_k), S_k the soft mask (Eq. 3.3) around the embedding of
    pixel ``anchors[k]`` (one pixel of object k, (C,)) over all pixels, I_k the object's ground-truth mask."""
    if n_objects == 0:
        return emb.new_zeros(())
    return soft_dice(emb, anchors, one_hot(labels, n_objects, emb.dtype)[1:], sigma2)


def unlabelled_push(emb: torch.Tensor, unlabelled: torch.Tensor, means: torch.Tensor, delta_d: float) -> torch.Tensor:
    """Eq. 3.7: (1/C) sum_k (1/N_U) sum_{i in U} [dd - ||mu_k - e_i||]_+^2 (0 when C = 0 or U is empty)."""
    n_u = int(unlabelled.sum())
    if means.shape[0] == 0 or n_u == 0:
        return emb.new_zeros(())
    dist = pairwise_distance(means, emb.T)  # all pixels, masked after: cheaper than gathering U
    hinge = (delta_d - dist).clamp_min(0.0) ** 2 * unlabelled[None, :].to(emb.dtype)
    return hinge.sum() / (means.shape[0] * n_u)


def _near(a: torch.Tensor, a_sq: torch.Tensor, e: torch.Tensor, e_sq: torch.Tensor, delta_v: float) -> torch.Tensor:
    """Hard masks ||e_i - a_k||^2 < dv^2 of the anchors ``a`` (D, K) over the pixels ``e`` (D, N),
    given both squared norms: (K, N), one matrix product for all anchors."""
    # ||e - a||^2 < dv^2  <=>  2 a.e - |a|^2 > |e|^2 - dv^2, in place on the (K, N) product
    return (a.T @ e).mul_(2.0).sub_(a_sq[:, None]) > (e_sq - delta_v**2)[None, :]


def consistency_anchors(
    emb_f: torch.Tensor,
    emb_g: torch.Tensor,
    region: torch.Tensor,
    delta_v: float,
    generator: torch.Generator,
    max_anchors: int = 20,
    uncovered: float = 0.05,
) -> torch.Tensor:
    """Anchor pixels of the consistency term (Eq. 3.8): each one uniform among the region's pixels
    not yet covered, until less than ``uncovered`` of the region is left or ``max_anchors``.

    A pixel is covered once it lies within dv of an anchor in f or in g (the hard masks S^f, S^g).
    "Uniform among the uncovered pixels" is the first uncovered pixel of one random order of the
    region, so candidates are taken from that order a block at a time: the greedy choice within a
    block needs only the candidates' distances to each other (a small M x M matrix), and one matrix
    product per block (usually one) gives the chosen anchors' masks over the image; per anchor only
    a boolean update and count of the uncovered pixels remain (was: a nonzero, a random draw and two
    distance passes over the image per anchor).
    """
    cand = torch.nonzero(region).squeeze(1)
    total = len(cand)
    cand = cand[torch.randperm(total, generator=generator).to(cand.device)]
    todo = region.clone()
    nf, ng = (emb_f * emb_f).sum(0), (emb_g * emb_g).sum(0)
    picked: list[torch.Tensor] = []
    n_picked, left, pos = 0, total, 0
    while n_picked < max_anchors and left > 0 and left >= uncovered * total:
        block = cand[pos : pos + 2 * (max_anchors - n_picked)]
        pos += len(block)
        alive = todo[block].tolist()
        # among[j][i]: candidate i lies within dv of candidate j (in f or in g)
        among = (_near(emb_f[:, block], nf[block], emb_f[:, block], nf[block], delta_v)
                 | _near(emb_g[:, block], ng[block], emb_g[:, block], ng[block], delta_v)).tolist()
        chosen = []
        for j in range(len(block)):
            if alive[j] and n_picked + len(chosen) < max_anchors:
                chosen.append(j)
                alive = [x and not c for x, c in zip(alive, among[j], strict=True)]
        if chosen:
            rows = torch.tensor(chosen, device=cand.device)
            a = block[rows]
            cover = _near(emb_f[:, a], nf[a], emb_f, nf, delta_v) | _near(emb_g[:, a], ng[a], emb_g, ng, delta_v)
            cover[torch.arange(len(chosen)), a] = True  # an anchor covers itself
            keep = 0
            for row in cover:  # the sampling loop's test before each anchor: stop once too little is left
                todo &= ~row
                keep += 1
                left = int(todo.sum())
                if left == 0 or left < uncovered * total:
                    break
            picked.append(a[:keep])
            n_picked += keep
        if pos >= total:
            break
    return torch.cat(picked) if picked else cand[:0]


def consistency_term(
    emb_f: torch.Tensor,
    emb_g: torch.Tensor,
    region: torch.Tensor,
    sigma2: float,
    delta_v: float,
    generator: torch.Generator,
    max_anchors: int = 20,
    uncovered: float = 0.05,
) -> torch.Tensor:
    """Eq. 3.8: (1/K) sum_k Dice(S_k^f, S_k^g) for K anchors sampled from ``region`` until it is
    covered (``consistency_anchors``). ``emb_g`` comes from the momentum network (no gradient): it
    is the target."""
    if not bool(region.any()):
        return emb_f.new_zeros(())
    with torch.no_grad():
        idx = consistency_anchors(
            emb_f.detach(), emb_g.detach(), region, delta_v, generator, max_anchors, uncovered
        )
        sg = soft_masks(emb_g.detach(), emb_g[:, idx].detach().T, sigma2)
    return soft_dice(emb_f, idx, sg, sigma2)


TERMS = ("pull", "push", "regulariser", "instance", "unlabelled_push", "consistency")


def sso_loss(
    emb_f: torch.Tensor,
    emb_g: torch.Tensor | None,
    labels: torch.Tensor,
    w: Weights,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Eq. 3.9, L_SSO = alpha L_pull + beta L_push + lambda L_obj (= L_SO, Eq. 3.6) + gamma L_U_push
    + delta L_U_con (+ 0.001 x the regulariser), averaged over the batch.

    ``emb_f``, ``emb_g``: (B, D, *spatial) embeddings of f and of the momentum network g (None when
    ``w.consistency`` is 0); ``labels``: (B, *spatial) object ids, 0 = unlabelled. The consistency
    region is the unlabelled part of each image; where (nearly) everything is labelled (full
    supervision) it is the whole image, as Table 3.2's fully supervised "SPOCO w/ con".
    Returns every weighted term's (unweighted) value and ``loss``.
    """
    sigma2 = kernel_variance(w.delta_v, w.kernel_threshold)
    b, d = emb_f.shape[:2]
    # one stream for the instance anchors, one for the consistency anchors: the draws of one term
    # never depend on whether another is computed
    seeds = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    gen_instance, gen_consistency = (torch.Generator().manual_seed(s) for s in seeds)
    sums = {t: emb_f.new_zeros((), dtype=torch.float32) for t in TERMS}
    # unbind: one backward for the batch (indexing emb_f[n] backs up a zero-filled batch per image)
    per_image_f = emb_f.float().reshape(b, d, -1).unbind(0)
    per_image_g = emb_g.float().reshape(b, d, -1).unbind(0) if emb_g is not None else [None] * b
    for n in range(b):
        e = per_image_f[n]
        lab, c = index_objects(labels[n].reshape(-1))
        means = cluster_means(e, lab, c)
        unlabelled = lab == 0
        terms = {
            "pull": pull_term(e, lab, means, w.delta_v),
            "push": push_term(means, w.delta_d),
            "regulariser": regulariser(means),
        }
        if w.instance:
            idx = random_pixels(torch.ones_like(unlabelled), lab, c, gen_instance)
            terms["instance"] = instance_term(e, lab, c, sigma2, idx)
        if w.unlabelled_push:
            terms["unlabelled_push"] = unlabelled_push(e, unlabelled, means, w.delta_d)
        if w.consistency and emb_g is not None:
            g = per_image_g[n]
            region = unlabelled if float(unlabelled.float().mean()) >= w.uncovered else torch.ones_like(unlabelled)
            terms["consistency"] = consistency_term(
                e, g, region, sigma2, w.delta_v, gen_consistency, w.max_anchors, w.uncovered
            )
        for key, value in terms.items():
            sums[key] = sums[key] + value
    out = {k: v / b for k, v in sums.items()}
    out["loss"] = (
        w.pull * out["pull"]
        + w.push * out["push"]
        + w.regulariser * out["regulariser"]
        + w.instance * out["instance"]
        + w.unlabelled_push * out["unlabelled_push"]
        + w.consistency * out["consistency"]
    )
    if emb_f.requires_grad and not out["loss"].requires_grad:
        # a batch without a labelled object, with the terms that need none switched off (the
        # discriminative baseline on sparse labels): a zero loss still backed by f, so the step
        # runs (zero gradient) instead of failing in backward()
        out["loss"] = out["loss"] + 0.0 * emb_f.sum()
    return out
