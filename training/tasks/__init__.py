"""Training methods as tasks of the one trainer loop (:class:`training.trainer.Trainer`).

``task`` in the config picks one: ``lingbot`` (:class:`~training.tasks.lingbot.LingBotTask`,
RGB-D completion by masked depth modeling), ``ma_teacher``
(:class:`~training.tasks.ma_teacher.MetricAnythingTeacherTask`, the prompted MetricAnything
teacher) or ``ma_student`` (:class:`~training.tasks.ma_student.MetricAnythingStudentTask`, its
prompt-free student distilled from pseudo-labels), ``focusdepth``
(:class:`~training.tasks.focusdepth.FocusDepthTask`, prompt-focused refinement of Depth
Anything V2: stages 1 / 2 and the DA2-ft baseline), ``da2_pretrain`` / ``sam3_pretrain``
(:mod:`training.tasks.focus_pretrain`, its tiny DA2 and SAM3 parts on synthetic data),
``depthlm`` (:class:`~training.tasks.depthlm.DepthLMTask`, DepthLM: supervised fine-tuning of
a vision-language model to answer the metric distance of a marked pixel) and
``depthlm_vision`` (:mod:`training.tasks.depthlm_vision`, its tiny vision tower pretrained to
see the marker and the depth under it).
:mod:`training.tasks.base` says what a task provides.
"""

from __future__ import annotations

from training.config import TASKS, TrainConfig
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
    if name == "focusdepth":
        from training.tasks.focusdepth import FocusDepthTask

        return FocusDepthTask
    if name == "da2_pretrain":
        from training.tasks.focus_pretrain import Da2PretrainTask

        return Da2PretrainTask
    if name == "sam3_pretrain":
        from training.tasks.focus_pretrain import Sam3PretrainTask

        return Sam3PretrainTask
    if name == "depthlm":
        from training.tasks.depthlm import DepthLMTask

        return DepthLMTask
    if name == "depthlm_vision":
        from training.tasks.depthlm_vision import DepthLMVisionTask

        return DepthLMVisionTask
    raise ValueError(f"unknown task {name!r}: one of {TASKS}")


def build_task(cfg: TrainConfig) -> Task:
    return task_class(cfg.task)(cfg)


__all__ = ["Task", "build_task", "task_class"]
