"""Two semi-supervised baselines beyond the paper, as strategies of the same loop (issue 17).

    mean_teacher   Tarvainen & Valpola (NeurIPS 2017). The student learns `training.seg_loss`
                   on the labeled batch plus w(t) * MSE between its foreground probabilities and
                   the teacher's on the unlabeled batch, each network seeing its own Gaussian
                   input noise (std `consistency_noise_std`, clipped to 2 std; the labeled batch
                   stays clean, so its supervised term is CNN's). After every update the teacher
                   becomes the exponential moving average of the student, with decay
                   min(1 - 1/(t + 1), `ema_decay`) (the published code's warm-up). The teacher
                   is the network that is validated and tested.
    cross_pseudo   Cross pseudo supervision, Chen et al. (CVPR 2021). Two networks of the same
                   architecture, initialised differently, each learn `training.seg_loss` on the
                   labeled batch and the cross-entropy against the other's hard pseudo-labels
                   (probability >= `threshold`) on the labeled and unlabeled images, weighted
                   w(t): L = L_sup(1) + L_sup(2) + w(t) * (CE(p1, y2) + CE(p2, y1)); one Adam
                   (lr_segmentation) over both. Network 1 is validated and tested (the paper
                   evaluates one network).

w(t) = weight * exp(-5 (1 - t / T)^2) for t < T, then the weight: the sigmoid ramp-up of
Laine & Aila (2017) used by both papers' code, over T = `rampup_fraction` of the run's planned
iterations, so that it follows the setting's budget like every other schedule of the suite.
The loss dict carries the unlabeled term, unweighted, as `loss_unsup`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from massl.training.strategies import NAN, STRATEGY_CLASSES, Strategy, Supervised


def sigmoid_rampup(iteration: int, length: int) -> float:
    """exp(-5 (1 - t)^2) with t = iteration / length clipped to [0, 1]; 1 when length is 0."""
    if length <= 0:
        return 1.0
    t = min(max(iteration / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class _RampedUnlabeled(Strategy):
    """A labeled and an unlabeled batch per step, the unlabeled term's weight ramped up."""

    uses_unlabeled = True
    weight_key = ""  # the TrainConfig field of the unlabeled term's final weight

    def setup(self):
        if self.planned_iterations is None:
            raise ValueError(f"{type(self).__name__} needs planned_iterations (its ramp-up follows the budget)")
        self.rampup_iterations = round(self.cfg.rampup_fraction * self.planned_iterations)
        self.steps = 0  # completed updates

    def unlabeled_weight(self) -> float:
        """w(t) of the coming update."""
        return getattr(self.cfg, self.weight_key) * sigmoid_rampup(self.steps, self.rampup_iterations)

    def extra_state(self):
        return {"steps": self.steps}

    def load_extra_state(self, state):
        self.steps = state["steps"]


class MeanTeacher(_RampedUnlabeled):
    weight_key = "consistency_weight"

    def setup(self):
        super().setup()
        self.teacher = copy.deepcopy(self.model).requires_grad_(False)
        device = next(self.model.parameters()).device
        # Its own stream (drawn from the run's seeded global one), checkpointed for an exact resume.
        self.noise = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,))))

    @property
    def eval_model(self):
        return self.teacher

    parameter_groups = Supervised.parameter_groups  # the student's encoder + seg decoder, as CNN's

    def extra_state(self):
        return {**super().extra_state(), "student": self.model.state_dict(), "noise": self.noise.get_state()}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.model.load_state_dict(state["student"])
        self.noise.set_state(state["noise"])

    def _noisy(self, image: Tensor) -> Tensor:
        std = self.cfg.consistency_noise_std
        noise = torch.randn(image.shape, generator=self.noise, device=image.device, dtype=image.dtype)
        return image + (noise * std).clamp(-2 * std, 2 * std)

    def step(self, batch):
        n_labeled = batch.image.shape[0]
        student_input = torch.cat([batch.image, self._noisy(batch.unlabeled)])
        teacher_input = self._noisy(batch.unlabeled)
        weight = self.unlabeled_weight()
        with self._autocast():
            prob = torch.sigmoid(self.model.segment(self.model.encode(student_input)).float())
            loss_seg = self._supervised_loss(prob[:n_labeled], batch)
            with torch.no_grad():
                teacher_prob = torch.sigmoid(self.teacher.segment(self.teacher.encode(teacher_input)).float())
            consistency = torch.mean((prob[n_labeled:] - teacher_prob) ** 2)
            loss = loss_seg + weight * consistency
        value = self._update("seg", "mean teacher", loss)
        self.steps += 1
        self.update_teacher()
        return {"loss": value, "loss_seg": float(loss_seg.detach()), "loss_rec": NAN,
                "loss_unsup": float(consistency.detach())}

    @torch.no_grad()
    def update_teacher(self) -> None:
        """teacher <- alpha * teacher + (1 - alpha) * student, alpha = min(1 - 1/(t + 1), ema_decay)."""
        alpha = min(1.0 - 1.0 / (self.steps + 1), self.cfg.ema_decay)
        for teacher, student in zip(self.teacher.parameters(), self.model.parameters()):
            teacher.mul_(alpha).add_(student.detach(), alpha=1.0 - alpha)


class CrossPseudo(_RampedUnlabeled):
    weight_key = "cps_weight"

    def setup(self):
        super().setup()
        if self.new_network is None:
            raise ValueError("CrossPseudo needs new_network (its second, differently initialised network)")
        self.second = self.new_network()

    def networks(self):
        return (self.model, self.second)

    def parameter_groups(self):
        params = [p for net in self.networks() for p in self._params(net.encoder, net.seg_decoder)]
        return {"seg": (params, self.cfg.lr_segmentation)}

    def extra_state(self):
        return {**super().extra_state(), "second": self.second.state_dict()}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.second.load_state_dict(state["second"])

    def step(self, batch):
        n_labeled = batch.image.shape[0]
        images = torch.cat([batch.image, batch.unlabeled])
        weight = self.unlabeled_weight()
        with self._autocast():
            logits = [net.segment(net.encode(images)).float() for net in self.networks()]
            probs = [torch.sigmoid(x) for x in logits]
            loss_sup = sum(self._supervised_loss(p[:n_labeled], batch) for p in probs)
            pseudo = [(p.detach() >= self.cfg.threshold).float() for p in probs]
            loss_cps = (F.binary_cross_entropy_with_logits(logits[0], pseudo[1])
                        + F.binary_cross_entropy_with_logits(logits[1], pseudo[0]))
            loss = loss_sup + weight * loss_cps
        value = self._update("seg", "cross pseudo supervision", loss)
        self.steps += 1
        return {"loss": value, "loss_seg": float(loss_sup.detach()), "loss_rec": NAN,
                "loss_unsup": float(loss_cps.detach())}


STRATEGY_CLASSES.update({"mean_teacher": MeanTeacher, "cross_pseudo": CrossPseudo})
