"""Training methods as tasks of the one trainer loop (:class:`training.trainer.Trainer`).

``task`` in the config picks one: ``lingbot`` (:class:`~training.tasks.lingbot.LingBotTask`,
RGB-D completion by masked depth modeling), ``ma_teacher``
(:class:`~training.tasks.ma_teacher.MetricAnythingTeacherTask`, the prompted MetricAnything
teacher) or ``ma_student`` (:class:`~training.tasks.ma_student.MetricAnythingStudentTask`, its
prompt-free student distilled from pseudo-labels). :mod:`training.tasks.base` says what a
task provides.
"""

from __future__ import annotations

from training.config import TrainConfig
from training.tasks.base import Task


def task_class(name: str) -> type[Task]:
    """The task class of a config's ``task`` name (imported on demand)."""
    if name == "lingbot":
        from training.tasks.lingbot import LingBotTask

        return LingBotTask
    if name == "ma_teacher":
        from training.tasks.ma_teacher import MetricAnythingTeacherTask

        return MetricAnythingTeacherTask
    if name == "ma_student":
        from training.tasks.ma_student import MetricAnythingStudentTask

        return MetricAnythingStudentTask
    raise ValueError(f"unknown task {name!r}: lingbot, ma_teacher or ma_student")


def build_task(cfg: TrainConfig) -> Task:
    return task_class(cfg.task)(cfg)


__all__ = ["Task", "build_task", "task_class"]
