"""The tasks, at the bottom of the dependency graph: what every other part reads about a task.

- tasks/specs.py: `TaskSpec` and `MetricSpec` of each task (`TASK_SPECS`, `TASKS`, `TASK_KINDS`, `METRICS`);
- tasks/losses.py: the per-task dense losses;
- tasks/accumulators.py: the per-task dataset-level metric accumulators;
- tasks/labels.py: the Cityscapes label table and the constants derived from it.

This package imports nothing from data/, models/, losses/, evaluation/, engine/ or experiments/.
"""

from tasks.specs import (
    ALL_TASKS,
    KINDS,
    METRICS,
    PROTOCOL_TASK_SPECS,
    SEG7_CLASS_NAMES,
    TASK_KINDS,
    TASK_SPECS,
    TASKS,
    MetricSpec,
    TaskSpec,
    check_tasks,
)

__all__ = ["ALL_TASKS", "KINDS", "METRICS", "PROTOCOL_TASK_SPECS", "SEG7_CLASS_NAMES", "TASKS", "TASK_KINDS",
           "TASK_SPECS", "MetricSpec", "TaskSpec", "check_tasks"]
