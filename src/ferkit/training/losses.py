"""Training losses: (weighted, label-smoothed) cross-entropy, plus weighted MSE for valence/arousal."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class TaskLoss:
    """``loss(outputs, labels, valence, arousal) -> (total, parts)`` for ``classify`` or ``multitask``.

    multitask: CE(expression) + ``va_weight`` * (MSE(valence) + MSE(arousal)).
    """

    def __init__(
        self, task: str, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0, va_weight: float = 1.0
    ):
        self.task = task
        self.class_weights = class_weights
        self.label_smoothing = float(label_smoothing)
        self.va_weight = float(va_weight)

    def to(self, device) -> TaskLoss:
        if self.class_weights is not None:
            self.class_weights = self.class_weights.to(device)
        return self

    def __call__(self, outputs, labels, valence=None, arousal=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        ce = F.cross_entropy(logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing)
        if self.task != "multitask":
            return ce, {"ce": ce.detach()}
        mse_v = F.mse_loss(outputs["valence"].float(), valence)
        mse_a = F.mse_loss(outputs["arousal"].float(), arousal)
        total = ce + self.va_weight * (mse_v + mse_a)
        return total, {"ce": ce.detach(), "mse_valence": mse_v.detach(), "mse_arousal": mse_a.detach()}
