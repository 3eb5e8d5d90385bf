"""The method contract: what a DFKD method owns and what the harness owns.

The harness owns the frozen teacher, the student with its optimiser and schedule,
devices, seeds, mixed precision, the pool, the clock, evaluation, checkpoints, logs and
progress. A method owns how synthetic samples are made and the loss terms special to
it. It never moves things between devices, times itself, writes files, reads the
command line or (unless it is a real-data baseline) touches real training data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .config import RunConfig
from .data import Normalizer
from .inversion import OnlineGenerator, kd_loss
from .pool import SamplePool
from .precision import FastPath
from .tasks import CLASSIFICATION, Classification
from .registry import register_method  # noqa: F401  (the contract's decorator; methods import it from here)

POOL, ONLINE, REAL, AUGMENTED = "pool", "online", "real", "augmented"
# The run budget of every method's ``smoke`` preset: the registry-driven tests run each
# method end to end on it (a method adds its own tiny synthesis budget).
Logs = dict[str, "float | torch.Tensor"]  # a step's logs: floats or scalar tensors (see synthesize)
SMOKE_RUN = {"epochs": 2, "batch_size": 8, "kd_steps": 3}


@dataclass
class Batch:
    """Images in the models' normalised space, optional labels, per-sample metadata."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodContext:
    teacher: nn.Module  # frozen, eval mode
    student: nn.Module  # trained by the harness from the losses the method returns
    num_classes: int
    image_shape: tuple[int, int, int]
    normalizer: Normalizer
    device: torch.device
    run: RunConfig
    # Crop-and-flip augmentation of the data set, for normalised image batches.
    augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    # The run's layout and precision: a method's own conv models (generators) go through
    # ``fast_path.prepare`` (``inversion.generator_for`` does it).
    fast_path: FastPath = field(default_factory=FastPath)
    # The data set's task (``dfkd_bench.tasks``): its supervised loss, metric and
    # label-moving crop and flip, for the methods that see labels (the real-data baselines).
    task: Classification = CLASSIFICATION
    # Crop and flip of real images with their labels (label maps move with their images):
    # the harness's is the task's; by default ``augment`` on the images, labels unchanged.
    augment_labelled: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    def __post_init__(self):
        if self.augment_labelled is None:
            self.augment_labelled = lambda x, y: (self.augment(x), y)


@dataclass
class NoConfig:
    """This method has no hyperparameters of its own."""


class Method:
    """Base class of every method. Subclasses set ``name``, ``config_cls`` and
    ``presets`` and implement ``synthesize`` (unless ``mode`` is ``real``).

    ``mode`` names the harness's feed (``dfkd_bench.feeds``) that gives the student its
    batches:
    - ``pool``: once an epoch ``synthesize`` returns a batch for the sample pool; the
      student then takes ``steps_per_epoch`` mini-batches from the pool;
    - ``online``: ``synthesize`` is called before every student step and its batch is
      used once (DAFL, DFAD, ZSKT, DFQ);
    - ``real``: the harness feeds batches of real training data (baselines only);
    - ``augmented``: a pool whose new samples the harness also augments each epoch
      (``make_augmenter``), filters (``filter_augmentations``) and adds beside them, in
      its own ``augmentation`` phase and through its on-disk cache (DDA).

    Extra trainable modules (heads trained with the student) are declared by
    ``student_modules``: the harness trains them with the student's optimiser and
    schedule, switches their train/eval mode with the student's and checkpoints them.
    ``check_config`` runs at planning time, before anything is written: a method stops
    there with a ``UserError`` when what it needs (an optional package, a model file)
    is missing.

    ``presets`` map a name to changes of the method's and the run's fields (one
    namespace); every built-in method has a ``smoke`` preset, its tiny test budget.
    ``renamed`` maps old config field names to new ones, so an old key in a preset file
    or ``--set`` is an error that names its successor.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = NoConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # The method's own defaults for harness fields, applied before any preset (SSD-KD
    # is defined by its buffer size, so it sets a data scale).
    run_defaults: ClassVar[dict[str, Any]] = {}
    mode: ClassVar[str] = POOL
    renamed: ClassVar[dict[str, str]] = {}
    # What ``run.data_scale`` means for this method, if it has a data scale of its own
    # (SSD-KD: its buffer size; KD: the real subset). For the others it only changes the
    # budget (pool capacity and student steps), and the planner says so.
    data_scale_means: ClassVar[str] = ""
    # The student's mode while the feed runs ``synthesize`` / ``warmup_step``: eval (its BN
    # running statistics, left untouched) unless the method's original game runs the
    # student in train mode (DFAD's and ZSKT's own code: batch statistics, and the
    # generator's batches move the student's running statistics).
    synthesis_student_train_mode: ClassVar[bool] = False
    # The tasks (``dfkd_bench.tasks``) the method supports; planning refuses a data set of
    # another task. The data-free methods are written for classifiers (one-hot targets,
    # per-image class balance), so they keep the default.
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    def __init__(self, cfg: Any, ctx: MethodContext):
        self.cfg = cfg
        self.ctx = ctx

    @classmethod
    def check_config(cls, run: RunConfig, cfg: Any) -> None:
        """Planning-time checks beyond field types and bounds (default: none)."""

    # --- synthesis -----------------------------------------------------------------
    def synthesize(self, epoch: int) -> tuple[Batch, Logs]:
        """A batch and its logs: floats, or scalar tensors left on the device (an online
        method's, made every KD step: the feed sums them there and reads the sums once an
        epoch, where a float would cost a host sync a step)."""
        raise NotImplementedError(f"{type(self).__name__} must implement synthesize()")

    def warmup_step(self, epoch: int) -> Logs:
        """One synthesis-only step of an online method's warm-up epoch
        (``run.warmup_epochs``): the harness calls it ``steps_per_epoch`` times an epoch
        and trains no student. Returns logs. Default: nothing to warm up."""
        return {}

    def make_pool(self, capacity: int) -> SamplePool:
        """The pool this method's samples go into (priority replay overrides it)."""
        return SamplePool(capacity)

    def sample_options(self, epoch: int) -> dict[str, Any]:
        """Keyword arguments for the pool's ``sample`` (priority replay's annealed beta)."""
        return {}

    def make_augmenter(self):
        """An ``augmented`` method's augmenter (``dfkd_bench.augment.Augmenter``), or
        None for no augmentation (an ablation)."""
        return None

    def filter_augmentations(self, sources: torch.Tensor, augmented: torch.Tensor, k: int
                             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Which augmentations to keep: ``augmented`` (normalised) holds ``k`` variations
        of each of ``sources``, grouped by source. Returns a boolean mask over
        ``augmented`` and logs. Default: keep all."""
        return torch.ones(len(augmented), dtype=torch.bool, device=augmented.device), {}

    # --- distillation --------------------------------------------------------------
    def distill_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss terms of one student step; must contain ``loss``. Default: KD at T."""
        with torch.no_grad():
            t = self.ctx.teacher(batch.images)
        s = self.ctx.student(batch.images)
        loss = kd_loss(s, t, self.ctx.run.T)
        return {"loss": loss, "kd": loss.detach()}

    def after_distill_step(self, batch: Batch, losses: dict[str, torch.Tensor]) -> None:
        """Called after each student update (priority refresh in SSD-KD)."""

    def variant(self) -> str:
        """What a table must say about this run beyond method and preset (DDA: which
        augmentation); "" for nothing."""
        return ""

    def student_modules(self) -> dict[str, nn.Module]:
        """Modules trained with the student by the harness (its optimiser, schedule,
        train/eval mode and checkpoint): heads whose loss is in ``distill_loss``."""
        return {}

    # --- bookkeeping ---------------------------------------------------------------
    def cost_modules(self) -> dict[str, nn.Module]:
        """Extra modules whose forward/backward images and FLOPs count towards the
        run's cost (generators); teacher and student are always counted."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class OnlineGeneratorMethod(Method):
    """An online method whose generator (an ``OnlineGenerator`` built from the config's
    ``nz``, ``lr_g`` and ``g_every``) steps before the student; subclasses define
    ``generator_loss(x) -> (loss, {name: tensor})`` on normalised generator images."""

    mode: ClassVar[str] = ONLINE

    def __init__(self, cfg: Any, ctx: MethodContext):
        super().__init__(cfg, ctx)
        # A config without a ``generator`` field (DAFL, DFQ) gets the shared generator.
        self.gen = OnlineGenerator(ctx, cfg.nz, cfg.lr_g, cfg.g_every, kind=getattr(cfg, "generator", "sigmoid"))

    def generator_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must implement generator_loss()")

    def variant(self) -> str:
        """The student's KD temperature where it is not the suite's T 20 and the student's
        loss is the harness's KD at T: the reference scripts distilled the online methods
        at T 1, which their ``paper`` presets keep, so a table row says so
        (``dafl-paper [student T 1]``). DFAD's L1 student loss has no temperature."""
        if type(self).distill_loss is not Method.distill_loss or self.ctx.run.T == 20.0:
            return ""
        return f"student T {self.ctx.run.T:g}"

    def synthesize(self, epoch: int) -> tuple[Batch, Logs]:
        images, logs = self.gen.next_batch(self.ctx.run.batch_size, self.generator_loss)
        return Batch(images), logs

    def warmup_step(self, epoch: int) -> Logs:
        """One generator step and no sample for the student: a warm-up epoch trains the
        generator ``steps_per_epoch`` times before any student step sees its samples."""
        return self.gen.step(self.ctx.run.batch_size, self.generator_loss)

    def cost_modules(self) -> dict[str, nn.Module]:
        return {"generator": self.gen.net}

    def state_dict(self) -> dict[str, Any]:
        return self.gen.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state)
