"""The three tasks of Kendall et al. (2018), named once for the whole project.

Every sample, model output, loss, weight and metric is a dict keyed by these names.
"""

TASKS: tuple[str, ...] = ("semantic", "instance", "depth")

# How each task's likelihood is modelled: decides the uncertainty-weighting form (Eq. 10).
TASK_KINDS: dict[str, str] = {
    "semantic": "classification",
    "instance": "regression",
    "depth": "regression",
}


def check_tasks(tasks) -> tuple[str, ...]:
    """Return `tasks` as a tuple in canonical order, or raise naming the unknown ones."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks are {list(TASKS)}")
    if not tasks:
        raise ValueError(f"at least one task is needed; valid tasks are {list(TASKS)}")
    return tuple(t for t in TASKS if t in tasks)
