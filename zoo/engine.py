"""The one training path for every task.  :func:`run` reads top to bottom: check the store,
prepare the data, build the model, fit, evaluate and log (:func:`train_and_log`), then publish
(:mod:`zoo.publish`).  Tasks plug in through :class:`zoo.tasks.base.Task`; nothing here knows a
task.  The callbacks of ``fit`` and the state a checkpoint keeps are in :mod:`zoo.callbacks`."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from zoo.errors import RunFailed, ZooError
from zoo.publish import Logged, RunResult
from zoo.recipe import Recipe
from zoo.tasks import get_task
from zoo.tasks.base import Prepared, Split, Task, reset_states

FAST_DEV_STEPS = 2


# ------------------------------------------------------------------------------- the run


def run(recipe: Recipe, *, fast_dev_run: bool = False, resume: str | None = None,
        echo=print, on_epoch=None) -> RunResult:
    """`zoo run`: train and log one recipe (:func:`train_and_log`), then publish it
    (:func:`zoo.publish.publish`: register, model card, promotion).  User mistakes raise
    ZooError before any MLflow run exists; a failure during training marks the run FAILED and
    raises RunFailed."""
    logged = train_and_log(recipe, fast_dev_run=fast_dev_run, resume=resume, echo=echo,
                           on_epoch=on_epoch)
    from zoo.publish import publish

    try:
        return publish(logged, echo=echo)
    except (KeyboardInterrupt, SystemExit, ZooError):
        raise
    except Exception as exc:
        raise RunFailed(f"run {logged.run_id} finished and its model was logged, but publishing "
                        f"it failed: {type(exc).__name__}: {exc}") from exc


def train_and_log(recipe: Recipe, *, fast_dev_run: bool = False, resume: str | None = None,
                  echo=print, on_epoch=None, parent_run_id: str | None = None) -> Logged:
    """Train, evaluate and log one recipe as an MLflow run; what publishing it needs.

    ``on_epoch(epoch, logs)`` is called after each epoch is logged (a sweep reports to its
    scheduler there; it may raise to stop the run); ``parent_run_id`` nests the run under
    another (a sweep's)."""
    from zoo import store, tracking

    # 1. the store: one line, quickly, before data or TensorFlow
    s = store.resolve()
    store.check(s, write=True)
    why = store.writable_folder(store.checkpoint_root(s))
    if why:
        raise ZooError(f"the checkpoint folder {store.checkpoint_root(s)} cannot be written: {why}")
    # 2. the data
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
    # 3. the model, right after the seed is set and before the run starts: same seed, same weights
    strategy = _setup_runtime(recipe)
    _native_kernels(echo)
    model = None if resume is not None else _new_model(task, prepared, recipe, strategy,
                                                       fast_dev_run, echo)
    tracked = tracking.TrackedRun(recipe.experiment, resume=resume, parent_run_id=parent_run_id,
                                  s=s)
    try:
        with tracked:
            model, state, ckpt = _resume_or_start(task, prepared, recipe, strategy, tracked,
                                                  fast_dev_run, resume is not None, echo, model)
            # 4. fit
            history = _fit(task, prepared, recipe, model, state, ckpt, tracked, fast_dev_run,
                           on_epoch)
            # 5. evaluate and log
            logged = _evaluate_and_log(task, prepared, recipe, model, history, tracked,
                                       fast_dev_run, echo)
    except (KeyboardInterrupt, SystemExit, ZooError):
        raise
    except Exception as exc:  # the run is already marked FAILED by the context manager
        raise RunFailed(f"run {tracked.run_id} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")  # the process-wide default again
    return logged


# --------------------------------------------------------------------------- 2. the data


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
    from zoo.callbacks import AUTO_MIN_STEPS

    if fast_dev_run or recipe.train.epochs != "auto":
        return 1
    return max(1, math.ceil(AUTO_MIN_STEPS / steps))


# -------------------------------------------------------------------------- 3. the model


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


def _resume_or_start(task: Task, prepared: Prepared, recipe: Recipe, strategy, tracked,
                     fast_dev_run: bool, resuming: bool, echo, model=None):
    """(model, train state, checkpoint folder): from the run's checkpoint when resuming, else
    ``model``, the new one, and a fresh state (the run's tags, params and recipe logged)."""
    import keras

    from zoo import tracking
    from zoo.callbacks import TrainState

    ckpt = tracking.checkpoint_dir(tracked.run_id)
    if resuming:
        with strategy.scope():
            model, state = TrainState.load(ckpt)
        echo(f"zoo: resuming run {tracked.run_id} at epoch {state.next_epoch + 1}")
        return model, state, ckpt
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
    return model, TrainState(), ckpt


# -------------------------------------------------------------------------------- 4. fit


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


def _verbosity(recipe: Recipe) -> int:
    """Keras's progress: a bar with rate and ETA on a terminal, one line per epoch otherwise."""
    if recipe.train.verbose is not None:
        return recipe.train.verbose
    return 1 if sys.stdout.isatty() else 2


def _fit(task: Task, prepared: Prepared, recipe: Recipe, model, state, ckpt: Path, tracked,
         fast_dev_run: bool, on_epoch=None) -> dict[str, list[float]]:
    """Train the remaining epochs, logging each and checkpointing it (into ``state`` and
    ``ckpt``); records why training stopped; returns the history."""
    from zoo.callbacks import make_callbacks

    bs = recipe.train.batch_size
    epochs = 1 if fast_dev_run else recipe.train.max_epochs
    steps, val_steps, drop = _steps(task, prepared, recipe, fast_dev_run)
    passes = _passes_per_epoch(recipe, steps, fast_dev_run)
    cbs = make_callbacks(task, prepared, recipe, tracked, state,
                         None if fast_dev_run else ckpt, on_epoch)
    if state.next_epoch < epochs:
        train_ds = train_dataset(prepared.train, bs, recipe.train.seed,
                                 state.next_epoch * passes, epochs * passes, task.shuffle, drop)
        model.fit(train_ds, epochs=epochs, initial_epoch=state.next_epoch,
                  steps_per_epoch=steps * passes, validation_data=eval_dataset(prepared.val, bs, drop),
                  validation_steps=val_steps, callbacks=cbs.all, verbose=_verbosity(recipe))
    history = state.history
    if any(not math.isfinite(v) for v in history.get("loss", [])):
        raise RuntimeError("training loss became NaN or infinite (TerminateOnNaN stopped it)")
    done = len(history.get("loss", []))
    stopper = cbs.stopper
    if cbs.budget.stopped:
        why = (f"the time budget of {recipe.train.time_budget:g} min (after {done} epochs"
               + (", the last one cut short)" if cbs.budget.cut_short else ")"))
    elif stopper is not None and stopper.stopped_epoch > 0:
        why = (f"no {stopper.monitor} improvement for {stopper.stopped_epoch - stopper.best_epoch} "
               f"epochs (best epoch "
               f"{stopper.best_epoch + 1} of {done}"
               + (", its weights kept)" if stopper.restore_best_weights else ")"))
    else:
        why = f"all {done} epochs"
    tracked.set_tags({"zoo.stopped": why, "zoo.train_seconds": f"{state.train_seconds:.1f}",
                      "zoo.passes_per_epoch": str(passes)})
    return history


# ------------------------------------------------------------------- 5. evaluate and log


def _evaluate_and_log(task: Task, prepared: Prepared, recipe: Recipe, model, history, tracked,
                      fast_dev_run: bool, echo) -> Logged:
    """Evaluate on the test split (and the trivial baseline), log the metrics, plots, the
    model bundle and the model card's inputs; the run's card; what publishing needs."""
    from zoo import bundle, publish, tracking

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
    with tempfile.TemporaryDirectory() as tmpdir:
        out = Path(tmpdir)
        for p in [_loss_curve(history, out)] + task.plots(model, prepared, out):
            tracked.log_artifact(p, "plots")
        saved = bundle.save(out / tracking.BUNDLE_PATH, task.exported(model, prepared),
                            prepared.preprocessing,
                            recipe.to_yaml(), test_metrics)
        digest = bundle.digest(saved)
        model_uri = tracked.log_model(saved, task.input_example(prepared))
    card = {"task": recipe.task, "main_metric": task.main_metric,
            "greater_is_better": task.greater_is_better, "data_info": prepared.info,
            "data_hash": prepared.data_hash, "model": recipe.resolved()["model"],
            "metrics": test_metrics, "examples": _examples(task, model, prepared, recipe),
            "generates": task.generates, "recipe_path": recipe.path}
    tracked.log_text(json.dumps(card, indent=1, default=str), publish.CARD_INPUTS)
    test_items = task.test_items(prepared)
    tracked.set_tags({"zoo.bundle_digest": digest, "zoo.test_items": str(test_items)})
    logged = Logged(recipe, tracked.run_id, tracked.experiment_id, tracked.store.uri, model_uri,
                    test_metrics, test_items,
                    tracking.run_tags(recipe, prepared.data_hash, fast_dev_run), digest, card,
                    fast_dev_run, len(next(iter(history.values()), [])),
                    (task.input_example(prepared) or [""])[0])
    tracking.describe_run(tracked.run_id, logged.card_text())
    shutil.rmtree(tracking.checkpoint_dir(tracked.run_id), ignore_errors=True)
    return logged


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
