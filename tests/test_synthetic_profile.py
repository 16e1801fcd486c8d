"""Synthetic generator profiles: v1 stays byte-identical, calibrated differs, the marker records it."""

import hashlib
from pathlib import Path

from data.synthetic import generate

# sha256 over (relative path, bytes) of every data file of generate(train=5, val=3, size=(128, 256),
# seed=0), computed on the generator before profiles existed: every committed result was trained on
# these bytes.
V1_DIGEST = "372c4d4d5c193c3f9429be055767a711f38a671bfea52990fc5a774194596e1c"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_v1_bytes_are_unchanged(tmp_path):
    root = generate(tmp_path / "v1", train=5, val=3, size=(128, 256), seed=0, workers=1)
    assert _digest(root) == V1_DIGEST
