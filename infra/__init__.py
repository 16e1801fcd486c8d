"""Infrastructure on the ground floor, used by every other part and importing none of them: atomic writes
and the one JSON normaliser (infra/atomic.py), file locks (infra/lock.py), stop signals (infra/stop.py),
provenance: the repository root and git commit (infra/provenance.py)."""
