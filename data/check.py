"""Check a Cityscapes tree: `python -m data.check ROOT [--split S ...] [--stats-split train]`.

A root in the preprocessed npy 2-task layout (data/npy.py) gets its own check: frames and class shares per split.

Per split (by default train and val, which training needs, plus any other found): frame count,
missing or unreadable files, wrong bit depths or sizes, unknown label ids, instance ids of classes
without instances or of unknown classes, and the share of valid disparity pixels. Exits with status 1
and names the files on any problem, a missing split included.

For the train split (`--stats-split`) it also prints the data's statistics beside approximate
figures for real Cityscapes (gtFine train), to judge how close a dataset (e.g. the synthetic one) is
to them: the pixel share of every class and of instance pixels (individual objects of the 8
evaluated instance classes), with the ratio ours / reference, and the distribution of the valid
disparities scaled to a 2048-pixel-wide frame (real Cityscapes: mostly 5-40 px). The statistics are
informational; they never change the exit status. `--out results/data/NAME.md` also writes them as a
Markdown table and `NAME.json` (with the command, git commit and the synthetic set's marker), so the
README can include measured figures instead of typed ones.
"""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.cityscapes import DataError, Frame, find_frames, read_sample
from data.labels import CLASS_NAMES, ID_TO_TRAINID, IGNORE_INDEX
from data.targets import instance_mask

# Approximate pixel shares (% of all pixels, void included) of real Cityscapes, gtFine train.
REFERENCE_PCT = {"road": 33.0, "building": 20.0, "vegetation": 14.0, "car": 6.0, "sidewalk": 5.0, "sky": 3.5,
                 "person": 1.0, "terrain": 1.0, "pole": 1.0, "truck": 0.2, "bus": 0.2, "train": 0.2}
REFERENCE_INSTANCE_PCT = 9.0
REFERENCE_DISPARITY_PX = (5.0, 40.0)  # where most valid full-resolution disparities of real Cityscapes lie
FULL_WIDTH = 2048  # Cityscapes' full resolution: disparities are scaled to a frame this wide
TOLERANCE = 1.5  # "close to the reference": within this factor, judged for classes above 1 %
_BIN = 0.25  # px: resolution of the disparity histogram (quantiles are read from it)
_EDGES = np.arange(0.0, 1024.0 + _BIN, _BIN)

REQUIRED_SPLITS = ("train", "val")  # what train.py reads by default (data.train_split, data.val_split)


@dataclass
class SplitStats:
    """Pixel counts of a split: per label id, instance pixels, and a histogram of valid disparities in
    pixels of a FULL_WIDTH-wide frame (values beyond the last bin counted in the last one)."""

    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    instance_pixels: int = 0
    pixels: int = 0
    disparity_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(_EDGES) - 1, dtype=np.int64))

    def add(self, label_ids: np.ndarray, instance_ids: np.ndarray, disparity: np.ndarray) -> None:
        self.label_counts += np.bincount(label_ids.ravel(), minlength=256)[:256]
        self.instance_pixels += int(np.count_nonzero(instance_mask(instance_ids)))
        self.pixels += label_ids.size
        raw = disparity[disparity > 0].astype(np.float64)  # PNG value p > 0: (p - 1) / 256 px at file width
        full = (raw - 1.0) / 256.0 * (FULL_WIDTH / disparity.shape[1])
        self.disparity_hist += np.histogram(np.minimum(full, _EDGES[-1] - _BIN / 2), bins=_EDGES)[0]

    def class_pct(self) -> dict[str, float]:
        """% of all pixels (void included) per training class; "void" for the ignored label ids."""
        per_train = np.bincount(ID_TO_TRAINID, weights=self.label_counts, minlength=256)
        out = {name: 100.0 * per_train[i] / self.pixels for i, name in enumerate(CLASS_NAMES)}
        out["void"] = 100.0 * per_train[IGNORE_INDEX] / self.pixels
        return out

    def disparity_summary(self) -> dict[str, float] | None:
        """Shares (%) of valid disparities below, inside and above REFERENCE_DISPARITY_PX, and quantiles (px)."""
        n = int(self.disparity_hist.sum())
        if n == 0:
            return None
        lo, hi = (int(round(v / _BIN)) for v in REFERENCE_DISPARITY_PX)
        cum = np.cumsum(self.disparity_hist)

        def quantile(q: float) -> float:  # upper edge of the bin holding the q-quantile
            return float(_EDGES[1 + int(np.searchsorted(cum, q * n))])

        return {"below": 100.0 * cum[lo - 1] / n, "inside": 100.0 * (cum[hi - 1] - cum[lo - 1]) / n,
                "above": 100.0 * (n - cum[hi - 1]) / n, "p05": quantile(0.05), "p50": quantile(0.5),
                "p95": quantile(0.95), "n": n}


def check_frame(frame: Frame, stats: SplitStats | None = None) -> tuple[list[str], int, int]:
    """Problems of one frame (each naming its file), and its valid and total disparity pixels;
    its pixels are added to `stats` when given."""
    problems = [f"{path}: file is missing" for path in frame.files.values() if not path.is_file()]
    if problems:
        return problems, 0, 0
    try:
        sample = read_sample(frame)
    except DataError as error:
        return [str(error)], 0, 0
    if stats is not None:
        stats.add(sample.label_ids, sample.instance_ids, sample.disparity)
    return [], int(np.count_nonzero(sample.disparity)), sample.disparity.size


def check_split(root: Path, split: str, show_progress: bool = True,
                stats: SplitStats | None = None) -> tuple[list[str], str]:
    """Problems found in a split and a one-line summary; the frames' pixels go into `stats` when given."""
    try:
        frames = find_frames(root, split)
    except DataError as error:
        return [str(error)], f"{split}: no frames"
    problems: list[str] = []
    valid = total = 0
    for frame in tqdm(frames, desc=split, disable=not show_progress, leave=False):
        found, v, t = check_frame(frame, stats)
        problems += found
        valid += v
        total += t
    cities = len({f.city for f in frames})
    coverage = f"{100.0 * valid / total:.1f}%" if total else "n/a"
    summary = f"{split}: {len(frames)} frames in {cities} cities, disparity valid on {coverage} of pixels"
    if problems:
        summary += f", {len(problems)} problem(s)"
    return problems, summary


def format_stats(split: str, stats: SplitStats) -> list[str]:
    """The class-frequency table beside the reference and the disparity distribution, as printed lines."""
    pct = stats.class_pct()
    lines = [f"{split}: class pixel frequencies, % of all pixels (void included), beside real Cityscapes "
             "(gtFine train, approximate)",
             f"  {'class':<16}{'ours %':>8}{'ref %':>8}{'ours/ref':>10}"]
    judged = close = 0
    rows = [(name, pct[name], REFERENCE_PCT.get(name)) for name in CLASS_NAMES]
    rows += [("void", pct["void"], None),
             ("instance pixels", 100.0 * stats.instance_pixels / stats.pixels, REFERENCE_INSTANCE_PCT)]
    for name, ours, ref in rows:
        ratio = ours / ref if ref else None
        note = ""
        if ref is not None and ref > 1.0:
            judged += 1
            ok = 1 / TOLERANCE <= ratio <= TOLERANCE
            close += ok
            note = f"  {'within' if ok else 'outside'} {TOLERANCE:g}x"
        lines.append(f"  {name:<16}{ours:8.2f}{ref if ref is not None else '—':>8}"
                     f"{f'{ratio:.2f}' if ratio is not None else '—':>10}{note}")
    lines.append(f"  {close} of {judged} reference figures above 1 % are within a factor {TOLERANCE:g}")
    d = stats.disparity_summary()
    lo, hi = (f"{v:g}" for v in REFERENCE_DISPARITY_PX)
    if d is None:
        lines.append(f"{split}: no valid disparity")
    else:
        lines.append(f"{split}: valid disparities scaled to a {FULL_WIDTH}-px-wide frame: {d['inside']:.1f} % in "
                     f"{lo}-{hi} px (real Cityscapes: mostly), {d['below']:.1f} % below, {d['above']:.1f} % above; "
                     f"median {d['p50']:g} px, 5-95 % range {d['p05']:g}-{d['p95']:g} px "
                     f"({d['n']} pixels, {_BIN:g}-px bins)")
    return lines


def stats_record(root: Path, split: str, stats: SplitStats, argv: list[str]) -> dict:
    """The statistics of a split as a JSON-ready dict with their provenance."""
    from data.synthetic.profile import read_marker
    from infra.provenance import git_commit

    pct = stats.class_pct()
    return {"command": ["python", "-m", "data.check", *argv], "git_commit": git_commit(), "split": split,
            "synthetic": read_marker(root), "pixels": stats.pixels,
            "class_pct": pct, "instance_pct": 100.0 * stats.instance_pixels / stats.pixels,
            "reference_pct": REFERENCE_PCT, "reference_instance_pct": REFERENCE_INSTANCE_PCT,
            "disparity": stats.disparity_summary(), "reference_disparity_px": list(REFERENCE_DISPARITY_PX),
            "full_width": FULL_WIDTH, "tolerance": TOLERANCE}


def stats_markdown(rec: dict) -> str:
    """One table: our share, the reference and the ratio per class (classes of either above 0.1 %)."""
    syn = rec["synthetic"]
    what = f"synthetic set, profile {syn.get('profile', 'v1')}, seed {syn.get('seed')}" if syn else "dataset"
    lines = [f"Class pixel shares of the {rec['split']} split ({what}), % of all pixels (void included), beside "
             "approximate figures for real Cityscapes (gtFine train). Generated by "
             f"`{' '.join(rec['command'])}` at commit {rec['git_commit'] or 'unknown'}.", "",
             "| class | ours % | Cityscapes % | ours / Cityscapes |", "|---|---|---|---|"]
    judged = close = 0
    rows = [(k, v, rec["reference_pct"].get(k)) for k, v in rec["class_pct"].items() if k != "void"]
    rows += [("void", rec["class_pct"]["void"], None), ("instance pixels", rec["instance_pct"],
                                                        rec["reference_instance_pct"])]
    for name, ours, ref in rows:
        if ref is None and ours < 0.1 and name != "void":
            continue
        ratio = f"{ours / ref:.2f}" if ref else "—"
        if ref is not None and ref > 1.0:
            judged += 1
            ok = 1 / rec["tolerance"] <= ours / ref <= rec["tolerance"]
            close += ok
            ratio += "" if ok else f" (outside {rec['tolerance']:g}x)"
        lines.append(f"| {name} | {ours:.2f} | {ref if ref is not None else '—'} | {ratio} |")
    lines += ["", f"{close} of {judged} reference figures above 1 % are within a factor {rec['tolerance']:g}."]
    d = rec["disparity"]
    if d:
        lo, hi = rec["reference_disparity_px"]
        lines.append(f"Valid disparities scaled to a {rec['full_width']}-px-wide frame: {d['inside']:.1f} % in "
                     f"{lo:g}-{hi:g} px (real Cityscapes: most), {d['below']:.1f} % below, {d['above']:.1f} % above; "
                     f"median {d['p50']:g} px, 5-95 % range {d['p05']:g}-{d['p95']:g} px.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Check the splits and print a report; return the exit status."""
    parser = argparse.ArgumentParser(description="Check a Cityscapes dataset tree.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--split", action="append",
                        help="split(s) to check (default: train, val and every other split found)")
    parser.add_argument("--stats-split", default="train",
                        help="split whose class frequencies and disparities are compared with real Cityscapes "
                             "(default: train; '' for none)")
    parser.add_argument("--out", type=Path, help="also write the statistics as Markdown here (and .json beside it)")
    args = parser.parse_args(argv)
    from data.npy import check as check_npy
    from data.npy import is_npy_root

    if is_npy_root(args.root):  # the preprocessed 2-task layout of nash-mtl / FAMO / LibMTL (data/npy.py)
        return check_npy(args.root, args.split)
    if not (args.root / "leftImg8bit").is_dir():
        print(f"{args.root}: no leftImg8bit folder, not a Cityscapes tree", file=sys.stderr)
        return 1
    found = sorted(p.name for p in (args.root / "leftImg8bit").iterdir() if p.is_dir())
    splits = args.split or [*REQUIRED_SPLITS, *(s for s in found if s not in REQUIRED_SPLITS)]
    failed = False
    for split in splits:
        stats = SplitStats() if split == args.stats_split else None
        problems, summary = check_split(args.root, split, show_progress=sys.stderr.isatty(), stats=stats)
        print(summary)
        for line in problems:
            print(f"  {line}")
        failed |= bool(problems)
        if stats is not None and stats.pixels:
            print("\n".join(format_stats(split, stats)))
            if args.out:
                from infra.atomic import write_json, write_text

                rec = stats_record(args.root, split, stats, list(sys.argv[1:] if argv is None else argv))
                write_json(args.out.with_suffix(".json"), rec)
                write_text(args.out, stats_markdown(rec))
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
