"""Prompt preparation for the MetricAnything teacher: PDSA, GMDR and the 3-channel model input.

The MetricAnything paper (§3.2) only names the two prompt preparations it takes from See3D,
whose code is not public. They are implemented here as the closest public method defines them,
Prior Depth Anything (``prior_depth_anything/depth_completion.py``: ``ss_completer`` and
``kss_completer``), in **disparity space** (disparity = 1 / depth, in 1/m):

- **GMDR** (global metric depth rescaling): the prior's disparity ``x`` (from any prompt-free
  depth model, :func:`align_prompt`'s ``prior_depth``) aligned to the prompt's disparity ``y`` by
  ONE least-squares scale and shift over all prompt pixels: ``gmdr = s * x + t``. It is returned
  on every pixel, prompt pixels included (as Prior Depth Anything's ``global_preds``).
- **PDSA** (pixel-wise depth scale alignment): for every non-prompt pixel, its K = 5 nearest
  prompt pixels (Euclidean distance in pixel coordinates, one KD-tree query for all pixels),
  inverse-distance weights ``w_i = d_i^-1 / sum_j d_j^-1`` and a weighted least-squares scale
  and shift of the prior to the prompt over those K pixels, applied to the pixel's own prior.
  Prompt pixels keep their measured value. As in Prior Depth Anything's ``perform_weighted``,
  the weights multiply the K equations (rows), so the fit minimises ``sum_i (w_i r_i)^2``: a
  least-squares fit with weights ``w_i^2`` (proportional to ``1 / d_i^2``).

Where Prior Depth Anything adds 1e-5 random noise to the prior to keep the fits solvable, the
degenerate cases are handled explicitly and deterministically here:

- a prior pixel that is invalid (NaN, inf, <= 0) gives NaN in both maps; a prompt pixel whose
  prior is invalid keeps its measured value in PDSA but takes no part in any fit;
- no prompt pixel with a valid prior: no alignment (GMDR = the prior's own disparity, scale 1,
  shift 0), and PDSA = GMDR off the prompt pixels;
- GMDR when the affine fit is undetermined (one prompt pixel, or all prompt pixels at the same
  prior disparity) or gives a scale <= 0 (prior anti-correlated with the prompt): scale only,
  ``s = sum(x y) / sum(x^2)``, shift 0 (the depth-scale ambiguity of a metric prior is
  multiplicative, and this ``s`` is always > 0);
- PDSA when a pixel's local fit is undetermined (fewer than 2 neighbours, or all K neighbours at
  the same prior disparity: relative weighted variance below ``DEGENERATE_RTOL``) or gives a
  scale <= 0: GMDR's scale with the local weighted shift, ``s_g * x + sum(a (y - s_g x)) /
  sum(a)``. With a constant prior this is inverse-distance interpolation of the prompt;
- fewer than K prompt pixels: all of them are every pixel's neighbours.

The model input (:func:`model_input`) stacks ``[PDSA, GMDR, prompt mask]`` (3, H, W) float32 in
one space for both depth channels, chosen by the caller: ``"disparity"`` (1/m), ``"canonical"``
(DepthPro's canonical inverse depth ``f_px / (W * depth)``, the space the teacher predicts in)
or ``"prior_depth_anything"`` (Prior Depth Anything's ``normalize_depth``: depth min-max
normalised by the prompt's depth range, then disparity). See :func:`model_input`.

Everything is vectorised: no per-pixel Python. The K nearest neighbours come from open3d's
nanoflann KD-tree (exact), imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth_perception.core.depth import sanitize_depth, valid_mask
from depth_perception.core.prompts import downsampled_prompt, extreme_prompt, lidar_like_prompt

#: Neighbours per pixel in PDSA (the paper's and Prior Depth Anything's K).
PDSA_K = 5
#: A weighted fit is undetermined when the weighted variance of the prior disparities is at
#: most this fraction of their weighted mean square (float64 arithmetic).
DEGENERATE_RTOL = 1e-12
#: Training-time prompt size range (MetricAnything §3.1: 2,000 to 40,000 sampled pixels).
TRAINING_PROMPT_RANGE = (2_000, 40_000)
#: Spaces :func:`model_input` can put the two depth channels in.
SPACES = ("disparity", "canonical", "prior_depth_anything")


def depth_to_disparity(depth: np.ndarray) -> np.ndarray:
    """float64 disparity (1/m) of a depth map (metres); NaN where the depth is invalid."""
    depth = np.asarray(depth, dtype=np.float64)
    out = np.full(depth.shape, np.nan)
    ok = valid_mask(depth)
    out[ok] = 1.0 / depth[ok]
    return out


def disparity_to_depth(disparity: np.ndarray) -> np.ndarray:
    """float32 depth (m) of a disparity map (1/m); NaN where the disparity is not finite > 0."""
    disparity = np.asarray(disparity, dtype=np.float64)
    out = np.full(disparity.shape, np.nan, dtype=np.float32)
    ok = valid_mask(disparity)
    out[ok] = (1.0 / disparity[ok]).astype(np.float32)
    return out


@dataclass(frozen=True)
class ScaleShift:
    """A fitted ``y = scale * x + shift`` and how it was obtained.

    ``mode``: ``"affine"`` (least squares in scale and shift), ``"scale_only"`` (the affine fit
    was undetermined or gave scale <= 0) or ``"none"`` (no point to fit: identity).
    """

    scale: float
    shift: float
    mode: str
    n: int


def fit_scale_shift(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> ScaleShift:
    """Least-squares ``y ~ scale * x + shift`` over 1-D arrays of prior (x) and prompt (y)
    disparities, optionally with per-point least-squares weights (minimising
    ``sum(weights * r^2)``). Falls back as GMDR does (module docstring): scale only when the
    affine fit is undetermined or its scale <= 0, identity when there is no point.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in size: {x.size} vs {y.size}")
    a = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if a.shape != x.shape:
        raise ValueError(f"weights must have {x.size} entries, got {a.size}")
    if x.size == 0:
        return ScaleShift(1.0, 0.0, "none", 0)
    s0 = a.sum()
    mx = (a * x).sum() / s0
    my = (a * y).sum() / s0
    xc = x - mx
    vxx = (a * xc * xc).sum()
    cxy = (a * xc * (y - my)).sum()
    msq = (a * x * x).sum()
    if vxx > DEGENERATE_RTOL * msq:
        scale = cxy / vxx
        if scale > 0:
            return ScaleShift(float(scale), float(my - scale * mx), "affine", x.size)
    return ScaleShift(float((a * x * y).sum() / msq), 0.0, "scale_only", x.size)


def _knn(points: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest ``points`` (n, 2) of every query (q, 2): indices (q, k) int64 and
    squared Euclidean distances (q, k) float64, nearest first (open3d's nanoflann KD-tree)."""
    from open3d.core import Tensor
    from open3d.core.nns import NearestNeighborSearch

    # Pixel coordinates below 2^12: float32 squared distances are exact integers.
    search = NearestNeighborSearch(Tensor(np.ascontiguousarray(points, dtype=np.float32)))
    if not search.knn_index():
        raise RuntimeError("open3d could not build the KD-tree index")
    idx, dist2 = search.knn_search(Tensor(np.ascontiguousarray(queries, dtype=np.float32)), k)
    return idx.numpy().astype(np.int64), dist2.numpy().astype(np.float64)


@dataclass(frozen=True)
class PromptAlignment:
    """PDSA and GMDR of one frame, in disparity (1/m), float32 (H, W), NaN where undefined.

    ``mask``: the prompt pixels (valid prompt depth). ``prompt``: the prompt's disparity (NaN
    off the prompt). ``global_fit``: GMDR's scale and shift. ``n_fit``: prompt pixels with a
    valid prior, the ones every fit uses. ``n_local_fallback``: PDSA pixels that took the
    degenerate-fit fallback.
    """

    pdsa: np.ndarray
    gmdr: np.ndarray
    mask: np.ndarray
    prompt: np.ndarray
    global_fit: ScaleShift
    n_fit: int
    n_local_fallback: int

    def pdsa_depth(self) -> np.ndarray:
        """PDSA as depth (m), NaN where its disparity is not > 0."""
        return disparity_to_depth(self.pdsa)

    def gmdr_depth(self) -> np.ndarray:
        """GMDR as depth (m), NaN where its disparity is not > 0."""
        return disparity_to_depth(self.gmdr)


def _check_pair(prior_depth: np.ndarray, prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prior = np.asarray(prior_depth)
    prm = np.asarray(prompt)
    if prior.ndim != 2 or prm.ndim != 2:
        raise ValueError(f"prior and prompt must be (H, W), got {prior.shape} and {prm.shape}")
    if prior.shape != prm.shape:
        raise ValueError(f"prior {prior.shape} and prompt {prm.shape} differ in size")
    return prior, prm


def gmdr(prior_depth: np.ndarray, prompt: np.ndarray) -> tuple[np.ndarray, ScaleShift]:
    """GMDR alone: (float32 (H, W) aligned prior disparity, NaN where the prior is invalid;
    the fit). See the module docstring for the degenerate cases."""
    prior, prm = _check_pair(prior_depth, prompt)
    x = depth_to_disparity(prior)
    y = depth_to_disparity(prm)
    fit_px = np.isfinite(x) & np.isfinite(y)
    fit = fit_scale_shift(x[fit_px], y[fit_px])
    return (fit.scale * x + fit.shift).astype(np.float32), fit


def align_prompt(prior_depth: np.ndarray, prompt: np.ndarray, k: int = PDSA_K) -> PromptAlignment:
    """PDSA and GMDR of a prior depth map (H, W, metres, from a prompt-free model) to a sparse
    prompt (H, W, metres, NaN / 0 where there is none). Deterministic; see the module
    docstring for the definitions and the degenerate cases."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    prior, prm = _check_pair(prior_depth, prompt)
    h, w = prior.shape
    x = depth_to_disparity(prior)
    y = depth_to_disparity(prm)
    mask = np.isfinite(y)
    fit_px = mask & np.isfinite(x)
    fit = fit_scale_shift(x[fit_px], y[fit_px])
    gmdr_map = fit.scale * x + fit.shift

    pdsa_map = gmdr_map.copy()
    n_fit = int(fit_px.sum())
    n_fallback = 0
    query = np.flatnonzero(~mask & np.isfinite(x))
    if n_fit > 0 and query.size > 0:
        kk = min(int(k), n_fit)
        fv, fu = np.divmod(np.flatnonzero(fit_px), w)
        qv, qu = np.divmod(query, w)
        idx, dist2 = _knn(np.stack([fu, fv], 1), np.stack([qu, qv], 1), kk)
        # (kk, q) layout: every reduction runs over contiguous rows of q values.
        idx = idx.T
        xs = x[fit_px][idx]  # neighbours' prior disparities
        ys = y[fit_px][idx]  # neighbours' prompt disparities
        # Least-squares weights of the row-weighted system: w_i^2 = (1/d_i)^2 / (sum 1/d)^2.
        # The fit does not change when all of a pixel's weights are scaled: use 1 / d_i^2
        # (query pixels are not prompt pixels, so d_i >= 1).
        a = 1.0 / dist2.T
        s0 = a.sum(axis=0)
        mx = (a * xs).sum(axis=0) / s0
        my = (a * ys).sum(axis=0) / s0
        xc = xs - mx
        vxx = (a * xc * xc).sum(axis=0)
        cxy = (a * xc * (ys - my)).sum(axis=0)
        msq = vxx + s0 * mx * mx  # sum(a x^2)
        determined = vxx > DEGENERATE_RTOL * msq
        scale = np.where(determined, cxy / np.where(determined, vxx, 1.0), 0.0)
        ok = determined & (scale > 0)
        shift = my - scale * mx
        # Fallback: GMDR's scale, the local weighted shift.
        scale = np.where(ok, scale, fit.scale)
        shift = np.where(ok, shift, my - fit.scale * mx)
        pdsa_map.reshape(-1)[query] = scale * x.reshape(-1)[query] + shift
        n_fallback = int((~ok).sum())
    pdsa_map[mask] = y[mask]
    return PromptAlignment(
        pdsa=pdsa_map.astype(np.float32),
        gmdr=gmdr_map.astype(np.float32),
        mask=mask,
        prompt=np.where(mask, y, np.nan).astype(np.float32),
        global_fit=fit,
        n_fit=n_fit,
        n_local_fallback=n_fallback,
    )


def pdsa(prior_depth: np.ndarray, prompt: np.ndarray, k: int = PDSA_K) -> np.ndarray:
    """PDSA alone: float32 (H, W) disparity (1/m), the prompt's own on prompt pixels."""
    return align_prompt(prior_depth, prompt, k).pdsa


@dataclass(frozen=True)
class ModelInput:
    """The conditioned teacher's prompt input and how to read its depth channels back.

    ``tensor``: (3, H, W) float32, channels ``[PDSA, GMDR, prompt mask]``, finite everywhere.
    ``space``: see :func:`model_input`. ``depth_min`` / ``depth_range``: the
    ``"prior_depth_anything"`` normalisation (``depth = normalised * depth_range +
    depth_min``); 0 and 1 in the other spaces.
    """

    tensor: np.ndarray
    space: str
    depth_min: float = 0.0
    depth_range: float = 1.0


def model_input(alignment: PromptAlignment, space: str, fx: float | None = None) -> ModelInput:
    """Stack ``[PDSA, GMDR, prompt mask]`` as the conditioned teacher consumes it.

    Both depth channels are in one space (``space``, required: it must match what the model
    was trained with):

    - ``"disparity"``: metric disparity 1/m as computed;
    - ``"canonical"``: DepthPro's canonical inverse depth ``fx / (W * depth)`` = ``fx / W *
      disparity`` (``fx`` in pixels of this image, W its width), the space the DepthPro-style
      teacher predicts in, so a perfect prompt is an input the model can pass through;
    - ``"prior_depth_anything"``: Prior Depth Anything's ``normalize_depth``: depth is min-max
      normalised by the prompt's depth range, ``(depth - min) / (max - min)`` (range 1 when all
      prompt depths are equal), then turned into disparity ``1 / normalised``; a pixel whose
      normalised depth is <= 0 (nearer than the nearest prompt point, or the nearest prompt
      point itself) gets 0, exactly as PDA's ``depth2disparity``. The normalisation is
      returned for reading the model's output back.

    Undefined values (invalid prior, disparity <= 0) are 0 in every space, as in PDA. The mask
    channel is 1.0 on prompt pixels, 0.0 elsewhere. Prior Depth Anything orders its condition
    ``[mask, GMDR, PDSA]``; this order is the issue's ``[PDSA, GMDR, mask]``.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    h, w = alignment.pdsa.shape
    maps = np.stack([alignment.pdsa, alignment.gmdr]).astype(np.float64)
    depth_min, depth_range = 0.0, 1.0
    if space == "canonical":
        if fx is None or not np.isfinite(fx) or fx <= 0:
            raise ValueError(f"space 'canonical' needs the focal length fx > 0, got {fx}")
        maps = maps * (float(fx) / w)
    elif space == "prior_depth_anything":
        prompt_depth = 1.0 / alignment.prompt[alignment.mask].astype(np.float64)
        if prompt_depth.size:
            depth_min = float(prompt_depth.min())
            depth_range = float(prompt_depth.max()) - depth_min
            if depth_range == 0.0:
                depth_range = 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = (1.0 / maps - depth_min) / depth_range
            maps = np.where(normalised > 0, 1.0 / normalised, 0.0)
    maps = np.where(np.isfinite(maps) & (maps > 0), maps, 0.0)
    tensor = np.empty((3, h, w), dtype=np.float32)
    tensor[:2] = maps
    tensor[2] = alignment.mask
    return ModelInput(tensor, space, depth_min, depth_range)


def prepare_prompt(
    prior_depth: np.ndarray,
    prompt: np.ndarray,
    space: str,
    fx: float | None = None,
    k: int = PDSA_K,
) -> tuple[ModelInput, PromptAlignment]:
    """:func:`align_prompt` then :func:`model_input`: the teacher engine's one call."""
    alignment = align_prompt(prior_depth, prompt, k)
    return model_input(alignment, space, fx), alignment


# ---------------------------------------------------------------------------------------------
# Prompts for training and evaluation
# ---------------------------------------------------------------------------------------------


def training_prompt(
    depth: np.ndarray,
    rng: np.random.Generator,
    n_range: tuple[int, int] = TRAINING_PROMPT_RANGE,
) -> np.ndarray:
    """The paper's training prompt: N ~ uniform integers in ``n_range`` (inclusive; 2,000 to
    40,000), then N distinct valid pixels of ``depth`` (ground truth, or the sensor's own depth
    when self-supervised) drawn uniformly at random; all of them when fewer are valid. Returns
    the sparse prompt (H, W) float32, NaN elsewhere."""
    lo, hi = (int(n) for n in n_range)
    if not 0 <= lo <= hi:
        raise ValueError(f"n_range must be 0 <= low <= high, got {n_range}")
    return extreme_prompt(depth, rng, n=int(rng.integers(lo, hi + 1)))


def downsampled_sparse_prompt(depth: np.ndarray, factor: int) -> np.ndarray:
    """The ``factor``x downsampled depth (:func:`prompts.downsampled_prompt`, NaN-aware cell
    means) as a full-resolution sparse prompt: each cell's value at the pixel nearest its
    centre (row ``r0 + (rows - 1) // 2``, likewise the column; partial border cells too),
    NaN elsewhere."""
    depth = sanitize_depth(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    h, w = depth.shape
    low = downsampled_prompt(depth, factor)
    rows = np.arange(low.shape[0]) * factor
    cols = np.arange(low.shape[1]) * factor
    rows = rows + (np.minimum(rows + factor, h) - rows - 1) // 2
    cols = cols + (np.minimum(cols + factor, w) - cols - 1) // 2
    out = np.full((h, w), np.nan, dtype=np.float32)
    out[np.ix_(rows, cols)] = low
    return out


#: The prompt kinds :func:`make_prompt` knows (the paper's training prompt and Table 1).
PROMPT_KINDS = ("training", "extreme", "lidar", "down8", "down16")


def make_prompt(kind: str, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sparse prompt (H, W, NaN elsewhere) of ``kind`` from a depth map: ``"training"``
    (:func:`training_prompt`), ``"extreme"`` (100 random points), ``"lidar"`` (16 scan
    lines), ``"down8"`` / ``"down16"`` (:func:`downsampled_sparse_prompt`)."""
    if kind == "training":
        return training_prompt(depth, rng)
    if kind == "extreme":
        return extreme_prompt(depth, rng, n=100)
    if kind == "lidar":
        return lidar_like_prompt(depth, rng)
    if kind in ("down8", "down16"):
        return downsampled_sparse_prompt(depth, int(kind[4:]))
    raise ValueError(f"unknown prompt kind {kind!r}; known: {PROMPT_KINDS}")
