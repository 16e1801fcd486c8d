"""Launchers: where the planned trainings run. `local` (experiments/runner.py) trains them as subprocesses of
reproduce.py; `submitit` submits them as cluster jobs (SLURM job arrays, or submitit's local executor).

    profile.py   launcher profiles: configs/launchers/<name>.yaml plus KEY=VALUE overrides
    job.py       the job body that runs on the node (torch-free): train.py as a child, preemption -> requeue
    driver.py    submit what is missing, watch the jobs, record finished runs, resubmit lost ones; status

Both launchers plan the same runs (experiments/plan.py), run the same `train.py` command in the same run
directory, and write the same records (experiments/records.py), so a table does not depend on where its
runs were trained.
"""
