"""Instances from the semantic prediction and the predicted centroid vectors (the paper's Table 2).

Every pixel predicted as one of the 8 evaluated instance classes casts a vote at pixel + vector,
its predicted instance centroid. The votes of each class are grouped into centres, and every pixel
of the class joins the nearest centre within a distance gate:

- `hough` (default, fast): the votes are counted into an accumulator of `stride`-pixel cells,
  smoothed by a Gaussian, and its peaks found by max-pool non-maximum suppression (as
  Panoptic-DeepLab finds centres in its heatmap); each peak is refined to the mean of the votes
  near it.
- `optics` (the paper's): scikit-learn's OPTICS over the votes, subsampled to at most `max_votes`
  per class to bound its cost; each cluster's centre is the mean of its votes.

Distances and sizes in the options are in pixels of a 2048-pixel-wide frame (Cityscapes' files)
and scale with the width of the arrays given (counts with the area), so the defaults mean the
same on a frame at any resolution. An instance's score is its vote support (the share of its
pixels whose votes fall within `support_radius` of its centre) times the mean semantic confidence
of its pixels when `probabilities` are given.

    instances = group_instances(semantic, vectors, method="hough", probabilities=conf)
    # -> [Instance(mask=bool (H, W), label_id=26, score=0.93), ...]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from tasks.labels import INSTANCE_IDS, TRAIN_LABELS

REFERENCE_WIDTH = 2048  # options are in pixels of a frame this wide
# trainId -> official label id, for the 8 evaluated instance classes (person ... bicycle).
INSTANCE_TRAIN_IDS: dict[int, int] = {lb.trainId: lb.id for lb in TRAIN_LABELS if lb.id in INSTANCE_IDS}


@dataclass
class Instance:
    """One predicted object: its pixels, official label id (26 = car) and confidence score."""

    mask: np.ndarray
    label_id: int
    score: float


@dataclass(frozen=True)
class HoughOptions:
    """Options of `hough`; lengths in pixels of a 2048-wide frame, counts in votes at that size."""

    stride: float = 4.0          # accumulator cell size
    # Gaussian smoothing of the accumulator (0: none) and the max-pool window of the peak search. Chosen on
    # 60 train frames with the synthetic table2 model's predictions (official AP 0.67 at sigma 4 / window 28,
    # 2.34 at 8 / 28, 4.11 at 16 / 28, 5.53 at 24 / 28): smoothing merges a scattered vote cloud into one
    # peak, but also two objects whose centroids lie close; with perfect inputs 1 (4 / 28) and 3 (16 / 28)
    # of the 657 objects of 100 val frames were not recovered exactly.
    sigma: float = 16.0
    nms_window: float = 28.0
    min_votes: float = 40.0      # a peak needs this many (smoothed) votes around it
    gate: float = 128.0          # a pixel joins the nearest centre only if its vote is this close
    spread: float = 3.0          # ... and within this many times the median distance of its group's votes
    support_radius: float = 16.0  # votes this close to the centre count as its support (score)
    min_pixels: float = 32.0     # smaller groups are dropped


@dataclass(frozen=True)
class OpticsOptions:
    """Options of `optics` (scikit-learn OPTICS with xi extraction); lengths as in HoughOptions."""

    max_votes: int = 2000        # votes per class given to OPTICS (a deterministic subsample)
    min_samples: int = 8         # OPTICS min_samples
    # OPTICS xi (steepness of a cluster boundary). On 4 synthetic val frames with ground-truth vectors plus
    # Gaussian noise of 16 px (at 2048 wide), official AP was 0.0 at scikit-learn's default 0.05, 38.5 at 0.2,
    # 91.1 at 0.35 and 0.5 (hough: 93.4).
    xi: float = 0.35
    max_eps: float = 64.0        # OPTICS max_eps
    gate: float = 128.0
    spread: float = 3.0
    support_radius: float = 16.0
    min_pixels: float = 32.0
    seed: int = 0                # of the subsample


METHODS = {"hough": HoughOptions, "optics": OpticsOptions}


def group_instances(semantic: np.ndarray, vectors: np.ndarray, method: str = "hough", *,
                    probabilities: np.ndarray | None = None, **options) -> list[Instance]:
    """Group the votes of each instance class into instances (see the module docstring).

    semantic: (H, W) int trainIds; vectors: (2, H, W) float (dx, dy) in pixels of that array;
    probabilities: optional (H, W) confidence of each pixel's class, or (19, H, W) class
    probabilities (their value at `semantic` is used). Options are the fields of
    HoughOptions / OpticsOptions. Instances come sorted by class, then by score, highest first.
    """
    if method not in METHODS:
        raise ValueError(f"unknown grouping method {method!r}; choose one of {sorted(METHODS)}")
    fields = {f.name for f in dataclasses.fields(METHODS[method])}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {method}; valid: {sorted(fields)}")
    opts = METHODS[method](**options)
    semantic, vectors = np.asarray(semantic), np.asarray(vectors, dtype=np.float32)
    h, w = semantic.shape
    if vectors.shape != (2, h, w):
        raise ValueError(f"vectors must be (2, {h}, {w}) for a ({h}, {w}) semantic map, got {vectors.shape}")
    confidence = _confidence(probabilities, semantic)
    scale = w / REFERENCE_WIDTH

    instances = []
    for train_id, label_id in sorted(INSTANCE_TRAIN_IDS.items()):
        ys, xs = np.nonzero(semantic == train_id)
        votes = np.stack([xs + vectors[0, ys, xs], ys + vectors[1, ys, xs]], axis=1)
        finite = np.isfinite(votes).all(axis=1)  # a non-finite vector votes nowhere: its pixel joins nothing
        ys, xs, votes = ys[finite], xs[finite], votes[finite]
        if xs.size == 0:
            continue
        if method == "hough":
            centres = _hough_centres(votes, (h, w), opts, scale)
        else:
            centres = _optics_centres(votes, opts, scale)
        found = _assign(votes, centres, opts, scale)
        for member in found:
            mask = np.zeros((h, w), dtype=bool)
            mask[ys[member.index], xs[member.index]] = True
            score = member.support * (float(confidence[mask].mean()) if confidence is not None else 1.0)
            instances.append(Instance(mask=mask, label_id=label_id, score=score))
    instances.sort(key=lambda inst: (inst.label_id, -inst.score))
    return instances


# ----------------------------------------------------------------------------- centres

def _hough_centres(votes: np.ndarray, shape: tuple[int, int], opts: HoughOptions, scale: float) -> np.ndarray:
    """(k, 2) centres: peaks of the smoothed vote accumulator, refined to the mean of nearby votes."""
    h, w = shape
    stride = max(1.0, opts.stride * scale)
    hc, wc = int(np.ceil(h / stride)), int(np.ceil(w / stride))
    # Votes outside the image still count, at the border cell: a centroid lies inside its instance's box.
    cx = np.clip(np.floor((votes[:, 0] + 0.5) / stride), 0, wc - 1).astype(np.int64)
    cy = np.clip(np.floor((votes[:, 1] + 0.5) / stride), 0, hc - 1).astype(np.int64)
    acc = np.bincount(cy * wc + cx, minlength=hc * wc).astype(np.float32).reshape(hc, wc)
    sigma = opts.sigma * scale / stride  # in cells
    if sigma > 0:
        acc = cv2.GaussianBlur(acc, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
        # the blur spreads a point's votes; compare with the votes of a window as wide as the blur
        acc *= 2 * np.pi * sigma**2
    kernel = max(3, int(round(opts.nms_window * scale / stride)) | 1)  # odd, in cells
    is_peak = (acc == ndimage.maximum_filter(acc, size=kernel, mode="constant")) & (acc >= opts.min_votes * scale**2)
    # A plateau of equal maxima is one peak: take the centre of each connected group of peak cells.
    labels, n = ndimage.label(is_peak, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    peaks = np.array(ndimage.center_of_mass(is_peak, labels, range(1, n + 1)))  # (n, 2) as (row, col)
    coarse = (peaks[:, ::-1] + 0.5) * stride - 0.5
    # Refine each peak to the mean of the votes that fall within half the NMS window of it.
    radius = stride * kernel / 2
    nearest, dist = _nearest(votes, coarse)
    centres = []
    for k in range(len(coarse)):
        near = votes[(nearest == k) & (dist <= radius)]
        centres.append(near.mean(axis=0) if len(near) else coarse[k])
    return np.array(centres)


def _optics_centres(votes: np.ndarray, opts: OpticsOptions, scale: float) -> np.ndarray:
    """(k, 2) centres: the means of OPTICS clusters of (a subsample of) the votes."""
    from sklearn.cluster import OPTICS

    if len(votes) > opts.max_votes:
        pick = np.random.default_rng(opts.seed).choice(len(votes), size=opts.max_votes, replace=False)
        votes = votes[np.sort(pick)]
    if len(votes) < max(2, opts.min_samples):
        return np.zeros((0, 2))
    optics = OPTICS(min_samples=opts.min_samples, xi=opts.xi, max_eps=max(1.0, opts.max_eps * scale),
                    cluster_method="xi")
    with np.errstate(divide="ignore"):  # sklearn divides reachabilities that are exactly 0 (identical votes)
        labels = optics.fit(votes.astype(np.float64)).labels_
    return np.array([votes[labels == k].mean(axis=0) for k in range(labels.max() + 1)]).reshape(-1, 2)


# ----------------------------------------------------------------------------- assignment

@dataclass
class _Member:
    index: np.ndarray  # indices into the class's pixels
    support: float


def _nearest(votes: np.ndarray, centres: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest centre for each vote (chunked to bound memory)."""
    nearest = np.empty(len(votes), dtype=np.int64)
    dist = np.empty(len(votes), dtype=np.float64)
    for start in range(0, len(votes), chunk):
        d = np.linalg.norm(votes[start:start + chunk, None, :] - centres[None, :, :], axis=2)
        nearest[start:start + chunk] = d.argmin(axis=1)
        dist[start:start + chunk] = d[np.arange(len(d)), nearest[start:start + chunk]]
    return nearest, dist


def _assign(votes: np.ndarray, centres: np.ndarray, opts, scale: float) -> list[_Member]:
    """Every vote joins its nearest centre within the gate; groups below min_pixels are dropped.

    The gate of each centre then tightens to `spread` times the median distance of the votes that
    joined it (never below `support_radius`): a group whose votes agree does not take in stray
    pixels (e.g. of an unannotated group of cars) that merely lie within the fixed gate.
    """
    if len(centres) == 0:
        return []
    nearest, dist = _nearest(votes, centres)
    nearest[dist > opts.gate * scale] = -1
    if opts.spread > 0:
        floor = max(opts.support_radius * scale, 1.0)
        radius = np.full(len(centres), opts.gate * scale)
        for k in range(len(centres)):
            d = dist[nearest == k]
            if d.size:
                radius[k] = min(radius[k], max(floor, opts.spread * float(np.median(d))))
        outside = (nearest >= 0) & (dist > radius[np.maximum(nearest, 0)])
        nearest[outside] = -1
    members = []
    for k in range(len(centres)):
        index = np.flatnonzero(nearest == k)
        if index.size == 0 or index.size < opts.min_pixels * scale**2:
            continue
        support = float(np.mean(dist[index] <= max(opts.support_radius * scale, 1.0)))
        members.append(_Member(index=index, support=support))
    return members


def _confidence(probabilities: np.ndarray | None, semantic: np.ndarray) -> np.ndarray | None:
    """(H, W) confidence of each pixel's predicted class, or None."""
    if probabilities is None:
        return None
    p = np.asarray(probabilities, dtype=np.float32)
    if p.shape == semantic.shape:
        return p
    if p.ndim == 3 and p.shape[1:] == semantic.shape:
        safe = np.clip(semantic, 0, p.shape[0] - 1)
        return np.take_along_axis(p, safe[None].astype(np.int64), axis=0)[0]
    raise ValueError(f"probabilities must be (H, W) or (C, H, W) for a {semantic.shape} map, got {p.shape}")
