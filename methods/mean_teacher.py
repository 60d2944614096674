"""Mean teacher (Tarvainen & Valpola, NeurIPS 2017): the teacher's weights are an
exponential moving average of the student's, and the student is pulled towards the
teacher's predictions on an independently noised pass of the same images.

The teacher is never touched by the optimizer; its accuracy is the headline, the
student's is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sslbench.methods.base import Batch, Method, MethodContext, Params, StepLosses
from sslbench.methods.losses import softmax_mse
from sslbench.methods.registry import register


@dataclass(frozen=True)
class MeanTeacherOptions:
    # teacher = decay * teacher + (1 - decay) * student after each optimizer step; optionally
    # a slower decay once the ramp-up is over (0.999 in the paper).
    ema_decay: float = 0.99
    ema_decay_after_ramp: float | None = None

    def __post_init__(self) -> None:
        for name in ("ema_decay", "ema_decay_after_ramp"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"method.{name} must be in [0, 1), got {value}")


@register("mean_teacher")
class MeanTeacher(Method):
    Options = MeanTeacherOptions
    description = "the target is a teacher, a moving average of the student (Tarvainen & Valpola)"
    options: MeanTeacherOptions
    forward_passes = 2  # the student's and the teacher's

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.teacher: Params = {k: v.detach().clone() for k, v in context.params.items()}

    def decay(self, epoch: int) -> float:
        """The EMA decay: ema_decay, or ema_decay_after_ramp once the ramp-up is over."""
        after = self.options.ema_decay_after_ramp
        return after if after is not None and epoch >= self.config.ramp_epochs else \
            self.options.ema_decay

    def losses(self, logits: torch.Tensor, batch: Batch, epoch: int) -> StepLosses:
        if batch.forward is None:
            raise ValueError("mean_teacher needs batch.forward for the teacher's pass")
        with torch.no_grad():
            teacher_probs = torch.softmax(batch.forward(self.teacher), dim=-1)
        return StepLosses(supervised=self.supervised(logits, batch),
                          unsupervised=softmax_mse(logits, teacher_probs))

    @torch.no_grad()
    def after_step(self, epoch: int) -> None:
        decay = self.decay(epoch)
        for name, teacher in self.teacher.items():
            teacher.lerp_(self.context.params[name].detach(), 1.0 - decay)

    def evaluation_params(self) -> dict[str, Params]:
        return {"teacher": self.teacher, "student": self.context.params}

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, tensor in self.teacher.items():
            tensor.copy_(state["teacher"][name])
