"""The one training path for every task: resolve, data, build, compile, fit, evaluate, log,
register.  Tasks plug in through :class:`zoo.tasks.base.Task`; nothing here knows a task."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from zoo.card import model_card
from zoo.errors import RunFailed, ZooError
from zoo.recipe import Recipe
from zoo.tasks import get_task
from zoo.tasks.base import Prepared, Split, Task, reset_states

FAST_DEV_STEPS = 2


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    test_metrics: dict[str, float]
    registered_name: str
    version: str | None            # None when the run was not registered
    epochs_run: int
    promoted: bool | None = None
    model_uri: str | None = None   # the logged model (MLflow URI)
    store: str = ""                # the store's URI
    promotion: str = ""            # why the champion alias moved or not
    task: str = ""
    main_metric: str = ""
    generates: bool = False
    example: str = ""              # an input to try the model with

    def summary(self) -> str:
        metrics = ", ".join(f"test_{k}={v:.4f}" for k, v in sorted(self.test_metrics.items()))
        champion = " (champion)" if self.promoted else ""
        where = (f"registered {self.registered_name} version {self.version}{champion}"
                 if self.version else f"logged {self.model_uri} (not registered)")
        return f"run {self.run_id} (experiment {self.experiment_id}): {metrics}\n{where}"


# ------------------------------------------------------------------------------ set-up


def _setup_runtime(recipe: Recipe):
    """Seeds, determinism, precision and the distribution strategy, from the recipe."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    if recipe.train.distribute == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(recipe.train.seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass
    keras.mixed_precision.set_global_policy(resolve_precision(recipe.train.precision))
    return strategy


def cpu_has_bfloat16_matrix_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU multiplies bfloat16 matrices in hardware (Intel AMX), read
    from the kernel's CPU flags; False where they cannot be read (not Linux)."""
    from zoo.native import cpu_flags

    return "amx_bf16" in cpu_flags(cpuinfo)


def _native_kernels(echo) -> None:
    """On a CPU run, says in one line which path the recurrent layers train on (zoo's native
    kernels, or the graph loop and why, and how to get the kernels), building the kernels first
    where none are cached yet and saying so (a build takes about 30 s, once per machine)."""
    from zoo import layers, native

    if layers._gpu_visible():
        return
    if native.build_due():
        echo("zoo: compiling zoo's native recurrence kernels (once per machine and TensorFlow "
             "version, about 30 s)")
    echo(native.status_line())


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for ``train.precision``.  "auto" is mixed_bfloat16 on a CPU with
    bfloat16 matrix units and no visible GPU (where the recurrent layers' matrix products then
    run in bfloat16 and the rest in float32, see ``zoo.fast_rnn.run``: a 1 x 384 GRU trains
    about 1.5 times as fast), else float32."""
    if precision != "auto":
        return precision
    from zoo import layers

    if layers._gpu_visible() or not cpu_has_bfloat16_matrix_units():
        return "float32"
    return "mixed_bfloat16"


def make_optimizer(recipe: Recipe, total_steps: int = 1):
    import keras

    opt = recipe.train.optimizer
    lr: Any = opt.learning_rate
    sched = recipe.train.lr_schedule
    if sched is not None and sched.name == "cosine" and recipe.train.epochs != "auto":
        lr = keras.optimizers.schedules.CosineDecay(opt.learning_rate, max(1, total_steps),
                                                    alpha=sched.final_fraction)
    kwargs: dict[str, Any] = {"learning_rate": lr}
    if opt.clipnorm is not None:
        kwargs["clipnorm"] = opt.clipnorm
    if opt.clipvalue is not None:
        kwargs["clipvalue"] = opt.clipvalue
    classes = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
               "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD,
               "adagrad": keras.optimizers.Adagrad}
    return classes[opt.name](**kwargs)


def build_compiled(task: Task, prepared: Prepared, recipe: Recipe, total_steps: int = 1):
    from zoo.registry import build

    body = build(recipe.model, recipe.params, return_sequences=task.return_sequences,
                 stateful=task.stateful)
    batch = recipe.train.batch_size if task.stateful else None
    model = task.build(prepared, body, batch)
    model.compile(optimizer=make_optimizer(recipe, total_steps), **task.compile_args())
    return model


def _tensors(split: Split):
    if split.sample_weight is None:
        return (split.x, split.y)
    return (split.x, split.y, split.sample_weight)


def train_dataset(split: Split, batch_size: int, seed: int, first_epoch: int, epochs: int,
                  shuffle: bool, drop_remainder: bool):
    """All remaining epochs as one dataset, each epoch's order a pure function of (seed, epoch),
    so a resumed run sees exactly the batches an uninterrupted one would."""
    import tensorflow as tf

    n = len(split)
    tensors = tuple(tf.constant(a) for a in _tensors(split))

    def epoch(e):
        idx = tf.range(n, dtype=tf.int64)
        if shuffle:
            idx = tf.random.experimental.stateless_shuffle(
                idx, seed=tf.stack([tf.constant(seed, tf.int64), e]))
        ds = tf.data.Dataset.from_tensor_slices(idx).batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(lambda i: tuple(tf.gather(t, i) for t in tensors))

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: Split, batch_size: int, drop_remainder: bool):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(_tensors(split))
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- callbacks


def _callbacks(task: Task, prepared: Prepared, recipe: Recipe, tracked, ckpt: Path,
               history: dict[str, list[float]], es_state: dict[str, Any] | None,
               save_checkpoints: bool, on_epoch=None):
    import keras

    from zoo.recipe import (AUTO_GRACE_EPOCHS, AUTO_LEARNED, AUTO_MIN_DELTA, AUTO_PATIENCE,
                            EarlyStopping)

    class Tracking(keras.callbacks.Callback):
        """Per-epoch metrics (and the task's derived ones and text artifacts) into MLflow,
        then a resumable checkpoint."""

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            logs.update(task.derived_metrics(logs))
            lr = self.model.optimizer.learning_rate   # the schedule's value now
            logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(lr)))
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            tracked.log_metrics(logs, step=epoch)
            for fname, text in task.epoch_artifacts(self.model, prepared, epoch).items():
                tracked.log_text(text, f"epochs/{epoch + 1:03d}_{fname}")
            if save_checkpoints:
                _save_checkpoint(ckpt, self.model, epoch, history, stopper, clock)
            if on_epoch is not None:
                on_epoch(epoch, logs)

    class ResetStates(keras.callbacks.Callback):
        """A stateful model starts every pass over a series from a zero state."""

        def on_epoch_begin(self, epoch, logs=None):
            reset_states(self.model)

        def on_test_begin(self, logs=None):
            reset_states(self.model)

        def on_test_end(self, logs=None):
            reset_states(self.model)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if es_state and "wait" in es_state:
                self.wait = es_state["wait"]
                self.best = es_state["best"]
                self.best_epoch = es_state["best_epoch"]
                if es_state.get("best_weights") is not None:
                    self.best_weights = es_state["best_weights"]

        def on_epoch_end(self, epoch, logs=None):
            """With ``epochs: auto``, patience starts once the model has learned something: a
            model still on its first plateau (training loss above AUTO_LEARNED of the first
            epoch's) is not stopped, for up to AUTO_GRACE_EPOCHS epochs."""
            super().on_epoch_end(epoch, logs)
            loss = (logs or {}).get("loss")
            if not self.grace or loss is None or epoch >= AUTO_GRACE_EPOCHS:
                return
            first = history["loss"][0] if history.get("loss") else loss
            if loss > AUTO_LEARNED * first:
                self.wait = 0
                if self.stopped_epoch == epoch:
                    self.stopped_epoch = 0
                    self.model.stop_training = False

    class TimeBudget(keras.callbacks.Callback):
        """Stops training when ``train.time_budget`` is spent, mid-epoch if need be: the
        epoch is cut short where its validation and logging (timed at the epoch before) still
        end within the budget; that last epoch is validated and logged like the others."""

        def on_train_begin(self, logs=None):
            self.start = time.monotonic() - clock["train_seconds"]
            self.after_epoch = 0.0     # validation, logging and checkpoint of one epoch
            self.last_batch = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.last_batch is not None:
                self.after_epoch = time.monotonic() - self.last_batch

        def on_train_batch_begin(self, batch, logs=None):
            if by_clock is not None:   # lr_schedule cosine with epochs: auto: over the budget
                done = min(1.0, (time.monotonic() - self.start) / (recipe.train.time_budget * 60))
                frac = by_clock.final_fraction
                scale = frac + (1 - frac) * 0.5 * (1 + math.cos(math.pi * done))
                self.model.optimizer.learning_rate.assign(recipe.train.optimizer.learning_rate * scale)

        def on_train_batch_end(self, batch, logs=None):
            self.last_batch = time.monotonic()
            budget = recipe.train.time_budget
            if budget is not None and not self.model.stop_training and \
                    self.last_batch - self.start + self.after_epoch >= budget * 60:
                self.model.stop_training = True
                clock["stopped_by_budget"] = True
                clock["cut_short"] = batch + 1 < (self.params or {}).get("steps", 0)

        def on_epoch_end(self, epoch, logs=None):
            clock["train_seconds"] = time.monotonic() - self.start

    train = recipe.train
    sched = train.lr_schedule
    by_clock = sched if sched is not None and sched.name == "cosine" and train.epochs == "auto" \
        else None
    clock = {"train_seconds": (es_state or {}).get("train_seconds", 0.0),
             "stopped_by_budget": False}
    stopper = None
    cbs: list = [keras.callbacks.TerminateOnNaN()]
    if task.stateful:
        cbs.append(ResetStates())
    es = train.early_stopping
    auto = es is None and train.epochs == "auto"
    if auto:
        es = EarlyStopping(monitor="val_loss", patience=AUTO_PATIENCE, min_delta=AUTO_MIN_DELTA,
                           restore_best_weights=True)
    if es is not None:
        stopper = ResumableEarlyStopping(monitor=es.monitor, patience=es.patience,
                                         min_delta=es.min_delta,
                                         restore_best_weights=es.restore_best_weights)
        stopper.grace = auto
        cbs.append(stopper)
    if train.lr_schedule is not None and train.lr_schedule.name == "plateau":
        s = train.lr_schedule
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=s.factor,
                                                     patience=s.patience, min_lr=s.min_lr,
                                                     verbose=0))
    cbs.append(TimeBudget())
    cbs.append(Tracking())
    return cbs, stopper, clock


def _save_checkpoint(ckpt: Path, model, epoch: int, history, stopper, clock) -> None:
    """Atomically replace the run's checkpoint: model (with optimizer state) and progress."""
    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ckpt, prefix=".tmp-"))
    model.save(tmp / "model.keras")
    # .keras keeps weights and optimizer state but not the random-seed generators' states
    # (dropout masks): keep every variable so a resumed run draws the same masks.
    np.savez(tmp / "variables.npz", *[np.asarray(v) for v in model.variables])
    state: dict[str, Any] = {"epoch": epoch, "history": history,
                             "early_stopping": {"train_seconds": clock["train_seconds"]}}
    if stopper is not None:
        state["early_stopping"].update({"wait": stopper.wait, "best": float(stopper.best),
                                        "best_epoch": stopper.best_epoch})
        if stopper.best_weights is not None:
            np.savez(tmp / "best_weights.npz", *stopper.best_weights)
    (tmp / "state.json").write_text(json.dumps(state))
    final = ckpt / "latest"
    old = ckpt / ".old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _load_checkpoint(ckpt: Path):
    from zoo.bundle import load_keras

    latest = ckpt / "latest"
    if not (latest / "state.json").exists():
        return None
    state = json.loads((latest / "state.json").read_text())
    model = load_keras(latest / "model.keras")
    with np.load(latest / "variables.npz") as z:
        for i, var in enumerate(model.variables):
            var.assign(z[f"arr_{i}"])
    es = state.get("early_stopping")
    if es is not None:
        bw = latest / "best_weights.npz"
        if bw.exists():
            with np.load(bw) as z:
                es["best_weights"] = [z[f"arr_{i}"] for i in range(len(z.files))]
    return model, state


# ------------------------------------------------------------------------------ the run


def run(recipe: Recipe, *, fast_dev_run: bool = False, resume: str | None = None,
        echo=print, on_epoch=None, parent_run_id: str | None = None,
        register: bool = True) -> RunResult:
    """Train, evaluate, log and register one recipe.  User mistakes raise ZooError before
    any MLflow run exists; a failure during training marks the run FAILED and raises RunFailed.

    ``on_epoch(epoch, logs)`` is called after each epoch is logged (a sweep reports to its
    scheduler there; it may raise to stop the run); ``parent_run_id`` nests the run under
    another (a sweep's); ``register=False`` evaluates and logs the model without registering."""
    from zoo import store, tracking

    s = store.resolve()
    store.check(s, write=True)           # before data or TensorFlow: one line, quickly
    why = store.writable_folder(store.checkpoint_root(s))
    if why:
        raise ZooError(f"the checkpoint folder {store.checkpoint_root(s)} cannot be written: {why}")
    creates_store = not s.exists()
    task: Task = get_task(recipe.task)(recipe)
    resume_tags = _check_resume(recipe, resume, fast_dev_run) if resume is not None else None
    if recipe.init_from:
        from zoo import warm_start

        task.init_source = warm_start.load_source(recipe)
    echo(f"zoo: preparing the {recipe.task} data")
    prepared = task.prepare(fast=fast_dev_run)
    if resume_tags is not None and resume_tags.get("zoo.data_hash") != prepared.data_hash:
        raise ZooError(f"--resume {resume}: the data differ from the run's (data hash "
                       f"{prepared.data_hash} != {resume_tags.get('zoo.data_hash')})")
    _steps(task, prepared, recipe, fast_dev_run)   # a batch larger than the data: before any run
    strategy = _setup_runtime(recipe)
    _native_kernels(echo)
    model = None if resume is not None else _new_model(task, prepared, recipe, strategy,
                                                       fast_dev_run, echo)
    tracked = tracking.TrackedRun(recipe.experiment, resume=resume, parent_run_id=parent_run_id,
                                  s=s)
    if creates_store and s.how.startswith("./mlruns") and store.default_store() is None:
        config = store.set_default(s.uri)
        echo(f"zoo: created the store {s.uri} and made it your default store ({config}); "
             "`zoo store` shows it, `zoo store use URI` changes it")
    try:
        with tracked:
            model, progress = _restore_or_build(task, prepared, recipe, strategy, tracked,
                                                fast_dev_run, resume is not None, echo, model)
            history = _fit(task, prepared, recipe, model, progress, tracked, fast_dev_run,
                           on_epoch)
            result = _finish(task, prepared, recipe, model, history, tracked, fast_dev_run, echo,
                             register)
    except (KeyboardInterrupt, SystemExit, ZooError):
        raise
    except Exception as exc:  # the run is already marked FAILED by the context manager
        raise RunFailed(f"run {tracked.run_id} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")  # the process-wide default again
    return result


def _check_resume(recipe: Recipe, run_id: str, fast_dev_run: bool) -> dict[str, str]:
    """The tags of the run to resume, after checking that it can be resumed with this recipe."""
    from zoo import tracking

    if fast_dev_run:
        raise ZooError("--resume cannot be combined with --fast-dev-run")
    found = tracking.find_run(run_id)
    tags = found["tags"]
    if tags.get("zoo.recipe_hash") != recipe.digest():
        raise ZooError(f"--resume {run_id}: the run was made from a different recipe "
                       f"(recipe hash {tags.get('zoo.recipe_hash')}, this one {recipe.digest()})")
    if found["status"] == "FINISHED":
        raise ZooError(f"--resume {run_id}: the run already finished")
    ckpt = tracking.checkpoint_dir(run_id)
    if not (ckpt / "latest" / "state.json").exists():
        raise ZooError(f"--resume {run_id}: no checkpoint at {ckpt} "
                       "(the run died before finishing its first epoch: start it again)")
    return tags


@dataclass
class _Progress:
    """Where training stands: the checkpoint folder, the next epoch, the metrics so far."""

    ckpt: Path
    first_epoch: int = 0
    history: dict[str, list[float]] | None = None
    early_stopping: dict[str, Any] | None = None


def _restore_or_build(task: Task, prepared: Prepared, recipe: Recipe, strategy, tracked,
                      fast_dev_run: bool, resuming: bool, echo, model=None):
    """The model and where training stands: from the run's checkpoint when resuming, else
    ``model``, the new one (the run's tags, params and recipe logged)."""
    import keras

    from zoo import tracking

    progress = _Progress(tracking.checkpoint_dir(tracked.run_id), history={})
    if resuming:
        with strategy.scope():
            model, state = _load_checkpoint(progress.ckpt)
        progress.first_epoch = state["epoch"] + 1
        progress.history = state["history"]
        progress.early_stopping = state.get("early_stopping")
        echo(f"zoo: resuming run {tracked.run_id} at epoch {progress.first_epoch + 1}")
        return model, progress
    tags = tracking.run_tags(recipe, prepared.data_hash, fast_dev_run)
    tracked.set_tags({**tags, "zoo.replicas": str(strategy.num_replicas_in_sync),
                      "zoo.precision": keras.mixed_precision.global_policy().name})
    tracked.log_params({**recipe.flat_params(),
                        **{f"data_info.{k}": str(v) for k, v in prepared.info.items()}})
    tracked.log_text(recipe.to_yaml(), "recipe.yaml")
    tracked.log_datasets({"train": prepared.train, "val": prepared.val, "test": prepared.test},
                         str(prepared.info.get("source_url") or prepared.info.get("source", "")),
                         recipe.task, prepared.data_hash)
    if task.init_source is not None:
        src = task.init_source
        tracked.set_tags({"zoo.init_from": f"{src.name}/{src.version}"})
    return model, progress


def _new_model(task: Task, prepared: Prepared, recipe: Recipe, strategy, fast_dev_run: bool,
               echo):
    """A new compiled model, warm-started if the recipe says so (before any run exists, so a
    source that does not fit fails with nothing written)."""
    steps, _, _ = _steps(task, prepared, recipe, fast_dev_run)
    with strategy.scope():
        model = build_compiled(task, prepared, recipe, steps * recipe.train.max_epochs)
        if task.init_source is not None:
            from zoo import warm_start

            src = task.init_source
            copied = warm_start.copy_weights(model, src, recipe)
            echo(f"zoo: warm start from {src.name} version {src.version}: {'; '.join(copied)}")
    return model


def _steps(task: Task, prepared: Prepared, recipe: Recipe, fast_dev_run: bool):
    """(steps per epoch, validation steps or None, whether the last partial batch is dropped)."""
    bs = recipe.train.batch_size
    drop = task.stateful or recipe.train.distribute != "none"
    steps = len(prepared.train) // bs if drop else math.ceil(len(prepared.train) / bs)
    if steps == 0:
        raise ZooError(f"{recipe.path}: train.batch_size: {bs} is larger than the training set "
                       f"({len(prepared.train)} examples)")
    if fast_dev_run:
        return min(steps, FAST_DEV_STEPS), FAST_DEV_STEPS, drop
    return steps, None, drop


def _passes_per_epoch(recipe: Recipe, steps: int, fast_dev_run: bool) -> int:
    """Passes over the training data per epoch: 1, except with ``epochs: auto`` on data so
    small that a pass is under AUTO_MIN_STEPS steps; then the fewest whole passes that make
    that many, so that patience, the learning-rate schedule and the logs count in units of
    real training rather than in a few steps each."""
    from zoo.recipe import AUTO_MIN_STEPS

    if fast_dev_run or recipe.train.epochs != "auto":
        return 1
    return max(1, math.ceil(AUTO_MIN_STEPS / steps))


def _verbosity(recipe: Recipe) -> int:
    """Keras's progress: a bar with rate and ETA on a terminal, one line per epoch otherwise."""
    if recipe.train.verbose is not None:
        return recipe.train.verbose
    return 1 if sys.stdout.isatty() else 2


def _fit(task: Task, prepared: Prepared, recipe: Recipe, model, progress: _Progress, tracked,
         fast_dev_run: bool, on_epoch=None) -> dict[str, list[float]]:
    """Train the remaining epochs, logging each and checkpointing it; returns the history."""
    bs = recipe.train.batch_size
    epochs = 1 if fast_dev_run else recipe.train.max_epochs
    steps, val_steps, drop = _steps(task, prepared, recipe, fast_dev_run)
    passes = _passes_per_epoch(recipe, steps, fast_dev_run)
    history = progress.history
    callbacks, stopper, clock = _callbacks(task, prepared, recipe, tracked, progress.ckpt,
                                           history, progress.early_stopping,
                                           save_checkpoints=not fast_dev_run, on_epoch=on_epoch)
    if progress.first_epoch < epochs:
        train_ds = train_dataset(prepared.train, bs, recipe.train.seed,
                                 progress.first_epoch * passes, epochs * passes, task.shuffle, drop)
        model.fit(train_ds, epochs=epochs, initial_epoch=progress.first_epoch,
                  steps_per_epoch=steps * passes, validation_data=eval_dataset(prepared.val, bs, drop),
                  validation_steps=val_steps, callbacks=callbacks, verbose=_verbosity(recipe))
    if any(not math.isfinite(v) for v in history.get("loss", [])):
        raise RuntimeError("training loss became NaN or infinite (TerminateOnNaN stopped it)")
    done = len(history.get("loss", []))
    if clock["stopped_by_budget"]:
        why = (f"the time budget of {recipe.train.time_budget:g} min (after {done} epochs"
               + (", the last one cut short)" if clock.get("cut_short") else ")"))
    elif stopper is not None and stopper.stopped_epoch > 0:
        why = (f"no {stopper.monitor} improvement for {stopper.stopped_epoch - stopper.best_epoch} "
               f"epochs (best epoch "
               f"{stopper.best_epoch + 1} of {done}"
               + (", its weights kept)" if stopper.restore_best_weights else ")"))
    else:
        why = f"all {done} epochs"
    tracked.set_tags({"zoo.stopped": why, "zoo.train_seconds": f"{clock['train_seconds']:.1f}",
                      "zoo.passes_per_epoch": str(passes)})
    return history


def _finish(task: Task, prepared: Prepared, recipe: Recipe, model, history, tracked,
            fast_dev_run: bool, echo, register: bool = True) -> RunResult:
    """Evaluate on the test split, log plots, register the bundle, apply the promotion rule."""
    from zoo import bundle, tracking

    bs = recipe.train.batch_size
    if task.stateful:
        reset_states(model)
    if fast_dev_run:
        prepared = replace(prepared, test=prepared.test.head(FAST_DEV_STEPS * bs))
    echo("zoo: evaluating on the test split")
    test_metrics = task.evaluate(model, prepared, bs)
    baseline = task.baseline(prepared)
    test_metrics.update({f"baseline_{k}": v for k, v in baseline.items()})
    tracked.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
    echo("zoo: logging plots and the model")
    tags = tracking.run_tags(recipe, prepared.data_hash, fast_dev_run)
    name = recipe.registered_name
    with tempfile.TemporaryDirectory() as tmpdir:
        out = Path(tmpdir)
        for p in [_loss_curve(history, out)] + task.plots(model, prepared, out):
            tracked.log_artifact(p, "plots")
        saved = bundle.save(out / tracking.BUNDLE_PATH, task.exported(model, prepared),
                            prepared.preprocessing,
                            recipe.to_yaml(), test_metrics)
        version_tags = {**tags, **{f"test_{k}": f"{v:.6g}" for k, v in test_metrics.items()},
                        "zoo.run_id": tracked.run_id, "zoo.main_metric": f"test_{task.main_metric}",
                        "zoo.bundle_digest": bundle.digest(saved)}
        model_uri = tracked.log_model(saved, task.input_example(prepared))
    tracked.set_tags({"zoo.version_tags": json.dumps(version_tags)})
    version, promoted = None, None
    example = (task.input_example(prepared) or [""])[0]
    examples = _examples(task, model, prepared, recipe)
    if register:
        echo(f"zoo: registering {name}")
        version = tracking.register(model_uri, name, version_tags)
        decision = tracked.promote(name, version, metric=f"test_{task.main_metric}",
                                   greater_is_better=task.greater_is_better,
                                   policy=recipe.track.promote, fast_dev_run=fast_dev_run,
                                   baseline=test_metrics.get(f"baseline_{task.main_metric}"))
        promoted = decision["promoted"]
        echo(f"zoo: {'promoted to champion' if promoted else 'not promoted'}: "
             f"{decision['reason']}")
    card = model_card(name=name, version=version, task=recipe.task,
                      main_metric=task.main_metric, greater_is_better=task.greater_is_better,
                      data_info=prepared.info, data_hash=prepared.data_hash,
                      model=recipe.resolved()["model"], metrics=test_metrics, examples=examples,
                      generates=task.generates, recipe_path=recipe.path)
    tracked.describe(card)
    if version is not None:
        tracking.describe_version(name, version, card)
    shutil.rmtree(tracking.checkpoint_dir(tracked.run_id), ignore_errors=True)
    epochs_run = len(next(iter(history.values()), []))
    return RunResult(tracked.run_id, tracked.experiment_id, test_metrics, name, version,
                     epochs_run, promoted, model_uri, tracked.store.uri,
                     decision["reason"] if register else "", recipe.task,
                     f"test_{task.main_metric}", task.generates, example)


def _examples(task: Task, model, prepared: Prepared, recipe: Recipe) -> list[str]:
    """What the trained model makes of a few inputs (or generates), for its model card."""
    loaded = task.loaded_class(model, prepared.preprocessing, recipe.resolved())
    try:
        if task.generates:
            return loaded.sample(n=2, temperature=0.8, seed=recipe.train.seed)
        inputs = list(task.input_example(prepared) or [])[:3]
        preds = loaded.predict(inputs)
    except ZooError as exc:
        return [f"(no example: {exc})"]
    shown = []
    for inp, pred in zip(inputs, preds):
        if isinstance(pred, dict) and "label" in pred:
            pred = f"{pred['label']} ({max(pred['probabilities'].values()):.2f})"
        elif isinstance(pred, list):
            pred = " ".join(map(str, pred))
        shown.append(f"{inp} -> {pred}")
    return shown


def _loss_curve(history: dict[str, list[float]], outdir: Path) -> Path:
    from zoo import plots

    fig, ax = plots.figure(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss curve")
    ax.legend()
    ax.grid(alpha=0.3)
    path = outdir / "loss_curve.png"
    plots.save(fig, path)
    return path
