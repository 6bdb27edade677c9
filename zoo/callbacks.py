"""What happens around the steps and epochs of training, and the one state it keeps.

:class:`TrainState` is where training stands: exactly what a checkpoint saves and a resume
restores.  The callbacks read and write it: :class:`Tracking` logs each epoch to MLflow and
checkpoints it, :class:`ResumableEarlyStopping` and :class:`TimeBudget` decide when training
stops (``epochs: auto``, ``train.time_budget``), :class:`Progress` says on the console what is
happening.  The engine imports this module when it trains (it imports Keras).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.tasks.base import reset_states

# ``epochs: auto`` (the cap on epochs is Train.max_epochs, in the recipe): training runs until
# val_loss stops improving (train.early_stopping, else these) or train.time_budget runs out.
AUTO_PATIENCE = 2        # epochs without improvement before stopping
AUTO_MIN_DELTA = 1e-3    # val_loss must fall by more than this (nats) to count as improving
AUTO_LEARNED = 0.9       # patience starts once training loss is below 0.9x the first epoch's
AUTO_GRACE_EPOCHS = 20   # ... or after this many epochs at the latest
AUTO_MIN_STEPS = 50      # an epoch is whole passes over the data of at least this many steps


# ----------------------------------------------------------------------------- the state


@dataclass
class TrainState:
    """Where training stands after its last finished epoch: what a checkpoint saves and a
    resumed run starts from."""

    epoch: int = -1                           # the last finished epoch, from 0; -1: none yet
    history: dict[str, list[float]] = field(default_factory=dict)   # every epoch's logs
    train_seconds: float = 0.0                # training time so far (the time budget's clock)
    # early stopping's progress (best is None without early stopping)
    wait: int = 0
    best: float | None = None
    best_epoch: int = 0
    best_weights: list[np.ndarray] | None = None

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    def save(self, ckpt: Path, model) -> None:
        """Atomically replace the checkpoint in ``ckpt``: the model (with its optimizer state
        and every variable) and this state."""
        ckpt.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=ckpt, prefix=".tmp-"))
        model.save(tmp / "model.keras")
        # .keras keeps weights and optimizer state but not the random-seed generators' states
        # (dropout masks): keep every variable so a resumed run draws the same masks.
        np.savez(tmp / "variables.npz", *[np.asarray(v) for v in model.variables])
        stopping: dict[str, Any] = {"train_seconds": self.train_seconds}
        if self.best is not None:
            stopping.update(wait=self.wait, best=float(self.best), best_epoch=self.best_epoch)
            if self.best_weights is not None:
                np.savez(tmp / "best_weights.npz", *self.best_weights)
        (tmp / "state.json").write_text(json.dumps({"epoch": self.epoch, "history": self.history,
                                                    "early_stopping": stopping}))
        final, old = ckpt / "latest", ckpt / ".old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)

    @classmethod
    def load(cls, ckpt: Path):
        """(model, state) from the checkpoint in ``ckpt``, None if there is none."""
        from zoo.bundle import load_keras

        latest = ckpt / "latest"
        if not (latest / "state.json").exists():
            return None
        saved = json.loads((latest / "state.json").read_text())
        model = load_keras(latest / "model.keras")
        with np.load(latest / "variables.npz") as z:
            for i, var in enumerate(model.variables):
                var.assign(z[f"arr_{i}"])
        stopping = saved.get("early_stopping") or {}
        state = cls(epoch=saved["epoch"], history=saved["history"],
                    train_seconds=stopping.get("train_seconds", 0.0))
        if "wait" in stopping:
            state.wait, state.best = stopping["wait"], stopping["best"]
            state.best_epoch = stopping["best_epoch"]
            if (latest / "best_weights.npz").exists():
                with np.load(latest / "best_weights.npz") as z:
                    state.best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]
        return model, state


# ------------------------------------------------------------------------------ callbacks


class Tracking(keras.callbacks.Callback):
    """Each epoch's metrics (and the task's derived ones and text artifacts) into the state's
    history and MLflow, then a resumable checkpoint; then ``on_epoch(epoch, logs)``."""

    def __init__(self, task, prepared, tracked, state: TrainState, ckpt: Path | None,
                 on_epoch=None) -> None:
        super().__init__()
        self.task, self.prepared, self.tracked = task, prepared, tracked
        self.state, self.ckpt, self.on_epoch = state, ckpt, on_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs.update(self.task.derived_metrics(logs))
        lr = self.model.optimizer.learning_rate   # the schedule's value now
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(lr)))
        for k, v in logs.items():
            self.state.history.setdefault(k, []).append(v)
        self.state.epoch = epoch
        self.tracked.log_metrics(logs, step=epoch)
        for fname, text in self.task.epoch_artifacts(self.model, self.prepared, epoch).items():
            self.tracked.log_text(text, f"epochs/{epoch + 1:03d}_{fname}")
        if self.ckpt is not None:
            self.state.save(self.ckpt, self.model)
        if self.on_epoch is not None:
            self.on_epoch(epoch, logs)


class ResetStates(keras.callbacks.Callback):
    """A stateful model starts every pass over a series from a zero state."""

    def on_epoch_begin(self, epoch, logs=None):
        reset_states(self.model)

    def on_test_begin(self, logs=None):
        reset_states(self.model)

    def on_test_end(self, logs=None):
        reset_states(self.model)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping, its progress kept in the TrainState (so a resumed run goes on
    counting).  With ``grace`` (``epochs: auto``), patience starts once the model has learned
    something: a model still on its first plateau (training loss above AUTO_LEARNED of the
    first epoch's) is not stopped, for up to AUTO_GRACE_EPOCHS epochs."""

    def __init__(self, state: TrainState, *, grace: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state, self.grace = state, grace

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.state.best is not None:
            self.wait, self.best = self.state.wait, self.state.best
            self.best_epoch = self.state.best_epoch
            if self.state.best_weights is not None:
                self.best_weights = self.state.best_weights

    def on_epoch_end(self, epoch, logs=None):
        stopping = self.model.stop_training      # already stopped (by the time budget)
        super().on_epoch_end(epoch, logs)
        loss = (logs or {}).get("loss")
        if self.grace and loss is not None and epoch < AUTO_GRACE_EPOCHS:
            history = self.state.history.get("loss")
            first = history[0] if history else loss
            if loss > AUTO_LEARNED * first:
                self.wait = 0
                if self.stopped_epoch == epoch:   # undo this stop, not the time budget's
                    self.stopped_epoch = 0
                    self.model.stop_training = stopping
        self.state.wait = self.wait
        self.state.best = None if self.best is None else float(self.best)
        self.state.best_epoch, self.state.best_weights = self.best_epoch, self.best_weights


class TimeBudget(keras.callbacks.Callback):
    """Stops training when ``train.time_budget`` (minutes) is spent, mid-epoch if need be: the
    epoch is cut short where its validation and logging (timed at the epoch before) still end
    within the budget; that last epoch is validated and logged like the others.  With
    ``cosine`` (a schedule, with ``epochs: auto``) it also sets the learning rate by the clock:
    a half cosine from ``learning_rate`` to ``final_fraction`` of it over the budget."""

    def __init__(self, state: TrainState, budget_minutes: float | None, learning_rate: float,
                 cosine=None) -> None:
        super().__init__()
        self.state, self.budget, self.lr, self.cosine = state, budget_minutes, learning_rate, cosine
        self.stopped = False           # the budget stopped training
        self.cut_short: tuple[int, int] | None = None   # (steps done, steps of an epoch)

    def seconds_left(self) -> float | None:
        if self.budget is None:
            return None
        return self.budget * 60 - (time.monotonic() - self.start)

    def on_train_begin(self, logs=None):
        self.start = time.monotonic() - self.state.train_seconds
        self.after_epoch = 0.0     # validation, logging and checkpoint of one epoch
        self.last_batch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.last_batch is not None:
            self.after_epoch = time.monotonic() - self.last_batch

    def on_train_batch_begin(self, batch, logs=None):
        if self.cosine is not None:
            done = min(1.0, (time.monotonic() - self.start) / (self.budget * 60))
            frac = self.cosine.final_fraction
            scale = frac + (1 - frac) * 0.5 * (1 + math.cos(math.pi * done))
            self.model.optimizer.learning_rate.assign(self.lr * scale)

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch = time.monotonic()
        if self.budget is not None and not self.model.stop_training and \
                self.last_batch - self.start + self.after_epoch >= self.budget * 60:
            self.model.stop_training = True
            self.stopped = True
            steps = (self.params or {}).get("steps") or 0
            if batch + 1 < steps:
                self.cut_short = (batch + 1, steps)

    def on_epoch_end(self, epoch, logs=None):
        self.state.train_seconds = time.monotonic() - self.start


class Progress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar for the steps of an epoch, with a header and footer that tell the
    truth: under ``epochs: auto`` no ``Epoch 1/1000`` (the cap) but what ends training and the
    time left, e.g. ``epoch 3 (auto: until val_loss stops improving, 4.2 of 9 min left)``; an
    epoch that the time budget cut short ends with the steps it ran, not all of them
    (``stopped by the time budget after 212 of 1279 steps``)."""

    def __init__(self, auto_until: str | None, budget: TimeBudget) -> None:
        super().__init__()
        self.auto_until, self.budget = auto_until, budget

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if not self.verbose:
            return
        left = self.budget.seconds_left()
        clock = (f"{max(0.0, left) / 60:.1f} of {self.budget.budget:g} min left"
                 if left is not None else "")
        if self.auto_until is not None:
            print(f"epoch {epoch + 1} (auto: until {self.auto_until}"
                  + (f", {clock})" if clock else ")"), flush=True)
        elif self.epochs > 1:
            print(f"Epoch {epoch + 1}/{self.epochs}" + (f" ({clock})" if clock else ""), flush=True)

    def _finalize_progbar(self, logs):
        cut = self.budget.cut_short
        if cut is None or self.progbar is None:
            return super()._finalize_progbar(logs)
        self.progbar.update(cut[0], list((logs or {}).items()), finalize=True)
        if self.verbose:
            print(f"stopped by the time budget after {cut[0]} of {cut[1]} steps", flush=True)


# ------------------------------------------------------------------------------ assembled


@dataclass
class Callbacks:
    all: list
    stopper: ResumableEarlyStopping | None
    budget: TimeBudget


def make_callbacks(task, prepared, recipe, tracked, state: TrainState, ckpt: Path | None,
                   on_epoch=None) -> Callbacks:
    """The callbacks of a run's ``fit``, in order; ``ckpt`` None saves no checkpoints."""
    from zoo.recipe import EarlyStopping

    train = recipe.train
    sched = train.lr_schedule
    auto = train.epochs == "auto"
    cbs: list = [keras.callbacks.TerminateOnNaN()]
    if task.stateful:
        cbs.append(ResetStates())
    es = train.early_stopping
    if es is None and auto:
        es = EarlyStopping(monitor="val_loss", patience=AUTO_PATIENCE, min_delta=AUTO_MIN_DELTA,
                           restore_best_weights=True)
    stopper = None
    if es is not None:
        stopper = ResumableEarlyStopping(state, grace=auto and train.early_stopping is None,
                                         monitor=es.monitor, patience=es.patience,
                                         min_delta=es.min_delta,
                                         restore_best_weights=es.restore_best_weights)
        cbs.append(stopper)
    if sched is not None and sched.name == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=sched.factor,
                                                     patience=sched.patience, min_lr=sched.min_lr,
                                                     verbose=0))
    cosine = sched if sched is not None and sched.name == "cosine" and auto else None
    budget = TimeBudget(state, train.time_budget, train.optimizer.learning_rate, cosine)
    cbs += [budget, Tracking(task, prepared, tracked, state, ckpt, on_epoch)]
    until = None
    if auto:
        until = (f"{es.monitor} stops improving" if es is not None else "the time budget ends")
    cbs.append(Progress(until, budget))
    return Callbacks(cbs, stopper, budget)
