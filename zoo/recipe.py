"""Recipes: YAML files with the sections task, data, model, train, track.

Loading resolves ``extends`` (relative to the file), applies ``--set key.path=value`` overrides,
and validates everything before anything is trained or written.  Every mistake is one
:class:`~zoo.errors.ZooError` line naming the file and the key.  This module does not import
TensorFlow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoo.errors import ZooError, did_you_mean
from zoo.schema import Strict

SECTIONS = ("extends", "task", "data", "model", "train", "track", "sweep")
# `sweep` is read by `zoo sweep` (zoo.sweep); a plain run of the same recipe ignores it.


# Documented upper bounds: far above any useful value, low enough that a typo is caught.
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$"   # what zoo.load and MLflow both accept


class Optimizer(Strict):
    """``train.optimizer``: the Keras optimizer and its learning rate."""

    name: Literal["adam", "adamw", "rmsprop", "sgd", "adagrad"] = Field(
        "adam", description="The Keras optimizer (keras.optimizers.Adam, AdamW, RMSprop, SGD, "
        "Adagrad), with Keras's defaults for everything but the keys below.")
    learning_rate: float = Field(1e-3, gt=0, description=(
        "The starting learning rate; train.lr_schedule changes it during training (each epoch "
        "logs its learning_rate)."))
    clipnorm: float | None = Field(None, gt=0, description=(
        "Clip each weight's gradient to this L2 norm (null: no clipping). Helps recurrent "
        "networks whose gradients sometimes explode."))
    clipvalue: float | None = Field(None, gt=0, description=(
        "Clip every gradient element to [-clipvalue, clipvalue] (null: no clipping)."))


class EarlyStopping(Strict):
    """``train.early_stopping``: stop when a validation metric stops improving."""

    monitor: str = Field("val_loss", description=(
        "The logged metric to watch, e.g. val_loss or val_accuracy (an epoch's val_* metrics; "
        "Keras infers the direction from the name: loss-like lower, accuracy-like higher)."))
    patience: int = Field(3, ge=0, le=MAX_EPOCHS, description=(
        "Epochs without improvement (by more than min_delta) before training stops."))
    min_delta: float = Field(0.0, ge=0, description=(
        "The smallest change of the monitored metric that counts as an improvement."))
    restore_best_weights: bool = Field(True, description=(
        "At the end, go back to the weights of the best epoch (else keep the last epoch's). "
        "The registered model and the test metrics use these weights."))


class LRSchedule(Strict):
    """How the learning rate changes during training: ``plateau`` multiplies it by ``factor``
    when val_loss has not improved for ``patience`` epochs; ``cosine`` decays it along a
    half cosine to ``final_fraction`` of its start over all the training steps (with
    ``epochs: auto``, over ``train.time_budget``: by the clock)."""

    name: Literal["plateau", "cosine"] = Field(description=(
        "plateau: multiply the learning rate by factor when val_loss has not improved for "
        "patience epochs. cosine: decay it along a half cosine from train.optimizer."
        "learning_rate to final_fraction of it over all the training steps; with epochs: auto "
        "(an unknown number of steps) over train.time_budget, by the clock, so cosine with "
        "epochs: auto needs a time_budget."))
    factor: float = Field(0.5, gt=0, lt=1, description=(
        "plateau: what the learning rate is multiplied by at each plateau."))
    patience: int = Field(1, ge=0, le=MAX_EPOCHS, description=(
        "plateau: epochs without val_loss improving before the learning rate is cut."))
    min_lr: float = Field(0.0, ge=0, description="plateau: the learning rate never goes below this.")
    final_fraction: float = Field(0.0, ge=0, lt=1, description=(
        "cosine: the learning rate at the end, as a fraction of the starting one "
        "(Keras's CosineDecay alpha)."))


AUTO_MAX_EPOCHS = 1000   # the cap under epochs: auto (Train.max_epochs); what stops training
# sooner, early stopping and the time budget, lives with its constants in zoo.callbacks


class Train(Strict):
    """``train``: how long and how the model is trained."""

    # a whole number, or "auto": until val_loss stops improving (train.early_stopping, else
    # patience 2 with the best weights kept) or train.time_budget runs out; on data of under
    # AUTO_MIN_STEPS batches an epoch is then as many whole passes as make that many steps
    epochs: int | Literal["auto"] = Field(10, description=(
        "Passes over the training data, or auto: train until val_loss stops improving by more "
        "than 0.001 for 2 epochs (train.early_stopping replaces that rule), keeping the best "
        "epoch's weights, or until train.time_budget runs out (at most 1000 epochs). Under auto, "
        "patience starts only once the training loss is below 0.9 of the first epoch's (or "
        "after 20 epochs), and on data of fewer than 50 batches an epoch is as many whole "
        "passes as make at least 50 steps."))
    time_budget: float | None = Field(None, gt=0, le=7 * 24 * 60, description=(
        "Minutes of training (null: no limit). Training stops when they are spent, cutting "
        "the last epoch short where its validation and logging still end within the budget; "
        "that epoch is validated and logged like the others. Start-up, data preparation, "
        "the test evaluation and registration are not counted. With a budget, a faster or "
        "busier machine trains more or less, so results are not reproducible across machines."))
    lr_schedule: LRSchedule | None = Field(None, description=(
        "How the learning rate changes during training (null: it stays at "
        "train.optimizer.learning_rate)."))
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description=(
        "Examples per training step. For stateful training (the echo task, char-rnn with "
        "data.carry_state) it is also the number of parallel stretches of the data that "
        "carry their state from one batch to the next."))
    optimizer: Optimizer = Field(Optimizer(), description="The optimizer and its learning rate.")
    early_stopping: EarlyStopping | None = Field(None, description=(
        "Stop when a validation metric stops improving (null: train all epochs, or with "
        "epochs: auto the built-in rule described there)."))
    seed: int = Field(1, ge=0, le=2**31 - 1, description=(
        "Seeds Python, NumPy and TensorFlow, and what the tasks draw (the sentiment split, the "
        "echo series, word-lm's max_sentences): on a CPU a run without a time budget gives the "
        "same metrics every time."))
    # auto: mixed_bfloat16 on a CPU with bfloat16 matrix units (AMX), else float32 (the engine's
    # resolve_precision; the run's tag zoo.precision says which)
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16", "auto"] = Field(
        "float32", description=(
            "The Keras dtype policy. mixed_*: compute in 16 bits, weights and the head in "
            "float32 (mixed_float16 is for GPUs). auto: mixed_bfloat16 on a CPU with bfloat16 "
            "matrix units (Intel AMX) and no visible GPU, else float32; the run's tag "
            "zoo.precision says which was used."))
    distribute: Literal["none", "mirrored"] = Field("none", description=(
        "mirrored: train on every visible GPU with tf.distribute.MirroredStrategy. Refused for "
        "stateful training (the echo task, data.carry_state)."))
    verbose: int | None = Field(None, ge=0, le=2, description=(
        "Keras's progress output: 0 silent, 1 a progress bar, 2 one line per epoch (null: a "
        "bar on a terminal, else a line per epoch)."))

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v):
        if isinstance(v, bool):
            raise ValueError("must be 'auto' or a whole number of epochs")
        if isinstance(v, int) and v < 1:
            raise ValueError("input should be greater than or equal to 1")
        if isinstance(v, int) and v > MAX_EPOCHS:
            raise ValueError(f"input should be less than or equal to {MAX_EPOCHS}")
        return v

    @model_validator(mode="after")
    def _cosine_needs_epochs(self):
        if self.lr_schedule is not None and self.lr_schedule.name == "cosine" \
                and self.epochs == "auto" and self.time_budget is None:
            raise ValueError("lr_schedule cosine decays over a known number of epochs or a "
                             "time budget: give train.epochs as a number or a "
                             "train.time_budget (or use lr_schedule plateau)")
        return self

    @property
    def max_epochs(self) -> int:
        return AUTO_MAX_EPOCHS if self.epochs == "auto" else self.epochs


class Track(Strict):
    """``track``: where the run is recorded and how its model is published."""

    experiment: str | None = Field(None, min_length=1, max_length=250, pattern=r"^[^\n\r\t]+$",
                                   description="The MLflow experiment of the run (null: the task's name).")
    registered_name: str | None = Field(None, pattern=NAME_RULE, description=(
        "The registered model's name, what zoo.load and zoo predict / generate take (null: "
        "MODEL-TASK, e.g. lstm-sentiment)."))
    promote: Literal["if-better", "always", "never"] = Field("if-better", description=(
        "When the new version gets the champion alias (what zoo.load(name) loads): if-better "
        "when it beats the champion on the task's main test metric, always, or never. A version "
        "that does not beat the task's trivial baseline, and a --fast-dev-run, never does."))


class Recipe(BaseModel):
    """A validated recipe.  ``task_options`` and ``data`` are validated by the task's models."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str = Field(description="The recipe file it was read from.")
    task: str = Field(description=(
        "The task, one of the registered tasks (`zoo recipes --keys` lists them); "
        "it decides the data, the network's input and head, the loss and the metrics. "
        "`task: NAME` is short for `task: {name: NAME}`."))
    task_options: BaseModel = Field(description=(
        "The task section's other keys: the task's options (its Options schema)."))
    data: BaseModel = Field(description="The data section: the task's Data schema.")
    model: str = Field(description=(
        "The builder of the recurrent body (`zoo models` lists them); the model "
        "section's other keys are its hyperparameters (`zoo models NAME`)."))
    params: BaseModel = Field(description="The builder's validated hyperparameters.")
    init_from: str | None = Field(None, description=(
        "A registered model to warm-start from, as NAME, NAME@ALIAS or "
        "NAME/VERSION (e.g. lstm-word-lm@champion), for tasks that can (sentiment): its "
        "vocabulary, embedding and recurrent weights are copied into the new model."))
    train: Train = Field(description="How long and how the model is trained.")
    track: Track = Field(description="Where the run is recorded and how the model is published.")

    @property
    def hparams(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")

    @property
    def registered_name(self) -> str:
        return self.track.registered_name or f"{self.model}-{self.task}"

    @property
    def experiment(self) -> str:
        return self.track.experiment or self.task

    def resolved(self) -> dict[str, Any]:
        """The fully resolved recipe, defaults filled in, as plain data (saved with the run)."""
        return {
            "task": {"name": self.task, **self.task_options.model_dump(mode="json")},
            "data": self.data.model_dump(mode="json"),
            "model": {"name": self.model, **self.hparams,
                      **({"init_from": self.init_from} if self.init_from else {})},
            "train": self.train.model_dump(mode="json"),
            "track": {**self.track.model_dump(mode="json"), "registered_name": self.registered_name,
                      "experiment": self.experiment},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)

    def digest(self) -> str:
        """A hash of the resolved recipe (what decides the result), for tags and caching."""
        text = json.dumps(self.resolved(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = "" if value is None else str(value)

        walk("", self.resolved())
        return out


# ---------------------------------------------------------------------------------- reading


MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 20


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: a key given twice in one mapping, an alias (``*name``,
    which can expand a small file into a huge one) and nesting deeper than MAX_YAML_DEPTH are
    refused, each as a YAMLError with the line."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}) is not "
                                              "allowed here: write the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} "
                                                  "levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, where: str) -> Any:
    """YAML text read with the strict safe loader; a mistake is one ZooError line naming
    ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["invalid"])[0]
        raise ZooError(f"{where}:{line} invalid YAML: {problem[:200]}") from None
    except RecursionError:
        raise ZooError(f"{where}: invalid YAML: nested too deeply") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ZooError(f"{path}: recipe file not found")
    if path.is_dir():
        raise ZooError(f"{path}: is a directory, expected a recipe .yaml file")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ZooError(f"{path}: {path.stat().st_size} bytes is too large for a recipe "
                           f"(at most {MAX_YAML_BYTES})")
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ZooError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ZooError(f"{path}: cannot be read ({exc.strerror})") from None
    if data is None:
        raise ZooError(f"{path}: recipe is empty")
    if not isinstance(data, dict):
        raise ZooError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    for key in data:
        if key not in SECTIONS:
            raise ZooError(f"{path}: unknown section {key!r}{did_you_mean(str(key), SECTIONS)}; "
                           f"sections: {', '.join(SECTIONS)}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ZooError(f"{path}: extends forms a cycle: {chain}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ZooError(f"{path}: extends: expected a file name, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.exists():
        raise ZooError(f"{path}: extends: file not found: {parent_path}")
    if isinstance(data.get("task"), str):
        data["task"] = {"name": data["task"]}
    base = _load_with_extends(parent_path, (*seen, resolved))
    if isinstance(base.get("task"), str):
        base["task"] = {"name": base["task"]}
    return _merge(base, data)


def apply_override(data: dict[str, Any], assignment: str, path: Path) -> None:
    """Apply one ``key.path=value`` override (the value is read as YAML) in place."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ZooError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. train.epochs=3")
    try:
        value = load_yaml(text, f"--set {key}") if text.strip() else ""
    except ZooError:
        value = text
    parts = key.split(".")
    if parts[0] not in SECTIONS or parts[0] == "extends":
        raise ZooError(f"--set {key}: unknown section {parts[0]!r}{did_you_mean(parts[0], SECTIONS)}")
    if parts[0] == "task" and isinstance(data.get("task"), str):
        data["task"] = {"name": data["task"]}
    if parts == ["task"]:
        data["task"] = {**(data.get("task") or {}), "name": value}
        return
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ZooError(f"{path}: --set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


_UNION_TAG = re.compile(r"^(int|float|str|bool|none|literal\[.*\]|function-.*|[a-z_]+\[.*\])$")


def _format_error(path: Path, section: str, exc: ValidationError, known: list[str]) -> ZooError:
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"] if not _UNION_TAG.match(str(p))]  # not a union's member
    loc = ".".join([section, *parts])
    if err["type"] == "value_error" and not parts:  # a rule across keys: no single value to show
        return ZooError(f"{path}: {loc}: {err['msg'].removeprefix('Value error, ')}")
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        return ZooError(f"{path}: {loc}: unknown key{did_you_mean(key, known)}")
    if err["type"] == "missing":
        return ZooError(f"{path}: {loc}: required key is missing")
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    if err["type"] == "string_pattern_mismatch":
        if err["loc"][-1] == "registered_name":
            return ZooError(f"{path}: {loc}: a registered name is letters, digits, '_', '.' and "
                            f"'-', starting with a letter or digit (got {got})")
        return ZooError(f"{path}: {loc}: must be one line of text (got {got})")
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    return ZooError(f"{path}: {loc}: {msg} (got {got})")


def _validate(model_cls: type[BaseModel], values: Any, path: Path, section: str) -> BaseModel:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ZooError(f"{path}: {section}: expected a mapping, got {values!r}")
    try:
        return model_cls(**values)
    except ValidationError as exc:
        sub = values
        for part in exc.errors()[0]["loc"][:-1]:
            sub = sub.get(part, {}) if isinstance(sub, dict) else {}
        known_cls = model_cls
        for part in exc.errors()[0]["loc"][:-1]:
            field = known_cls.model_fields.get(str(part))
            ann = getattr(field, "annotation", None)
            for cand in getattr(ann, "__args__", (ann,)):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    known_cls = cand
                    break
        raise _format_error(path, section, exc, list(known_cls.model_fields)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, resolve and validate a recipe.  Raises ZooError with one clear line on any mistake."""
    path = Path(path)
    return _recipe(path, _read(path, overrides))


def load_recipe_and_section(path: str | Path, overrides: list[str] | tuple[str, ...],
                            section: str, schema: type[BaseModel]):
    """A recipe and one of the sections a plain run ignores (``sweep``), read once: the recipe
    as :func:`load_recipe` makes it, the section validated against ``schema`` (None if the
    recipe has none) and as written (extends resolved, ``--set section.…`` applied)."""
    path = Path(path)
    data = _read(path, overrides)
    raw = data.get(section)
    return _recipe(path, data), None if raw is None else _validate(schema, raw, path, section), raw


def _read(path: Path, overrides) -> dict[str, Any]:
    """The recipe's data: extends resolved, ``--set`` overrides applied."""
    data = _load_with_extends(path)
    for assignment in overrides:
        apply_override(data, assignment, path)
    return data


def _recipe(path: Path, data: dict[str, Any]) -> Recipe:
    from zoo.registry import model_info, validate_params
    from zoo.tasks import get_task, list_tasks

    task_section = data.get("task")
    if task_section is None:
        raise ZooError(f"{path}: task: required section is missing (one of: {', '.join(list_tasks())})")
    if isinstance(task_section, str):
        task_section = {"name": task_section}
    if not isinstance(task_section, dict) or "name" not in task_section:
        raise ZooError(f"{path}: task: expected a task name or a mapping with 'name'")
    task_options = dict(task_section)
    task_name = task_options.pop("name")
    task_cls = get_task(str(task_name), where=f"{path}: task.name")

    model_section = data.get("model")
    if not isinstance(model_section, dict) or "name" not in model_section:
        raise ZooError(f"{path}: model.name: required key is missing (a registered builder, see `zoo models`)")
    hparams = dict(model_section)
    model_name = str(hparams.pop("name"))
    try:
        model_info(model_name)
    except ZooError as exc:
        raise ZooError(f"{path}: model.name: {exc}") from None
    init_from = hparams.pop("init_from", None)
    if init_from is not None:
        init_from = _check_init_from(init_from, task_cls, path)
    params = validate_params(model_name, hparams, where=f"{path}: ")

    recipe = Recipe(
        path=str(path),
        task=str(task_name),
        task_options=_validate(task_cls.Options, task_options, path, "task"),
        data=_validate(task_cls.Data, data.get("data"), path, "data"),
        model=model_name,
        params=params,
        init_from=init_from,
        train=_validate(Train, data.get("train"), path, "train"),
        track=_validate(Track, data.get("track"), path, "track"),
    )
    task_cls.check(recipe)
    _check_size(recipe, model_info(model_name).layer)
    return recipe


INIT_FROM_RULE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9_\-]+|/[0-9]+)?$"


def _check_init_from(value: Any, task_cls, path: Path) -> str:
    """``model.init_from``: a registered model to warm-start from, for tasks that can."""
    if not isinstance(value, str) or not re.match(INIT_FROM_RULE, value):
        raise ZooError(f"{path}: model.init_from: expected a registered model as NAME, NAME@ALIAS "
                       f"or NAME/VERSION, e.g. lstm-word-lm@champion (got {value!r})")
    if not task_cls.warm_starts:
        from zoo.tasks import list_tasks, get_task

        able = [t for t in list_tasks() if get_task(t).warm_starts]
        raise ZooError(f"{path}: model.init_from: task {task_cls.name!r} cannot warm-start from "
                       f"another model (tasks that can: {', '.join(able)})")
    return value


def _check_size(recipe: Recipe, layer: str) -> None:
    """Refuse a model whose weights and optimizer state alone would not fit in this machine's
    memory (an estimate from units and layers; the message gives the figures)."""
    hp = recipe.hparams
    units, layers = hp.get("units"), hp.get("layers", 1)
    if not isinstance(units, int) or not isinstance(layers, int):
        return
    gates = 4 if "LSTM" in layer else 3 if "GRU" in layer else 1
    directions = 2 if layer.startswith("Bidirectional") else 1
    width = max(units, int(getattr(recipe.task_options, "embedding_dim", units) or units))
    weights = layers * directions * gates * (width + units + 2) * units
    need = weights * 4 * 4   # float32 weights, gradients and two Adam moments
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        raise ZooError(f"{recipe.path}: model.units: {units} units x {layers} layer(s) is about "
                       f"{weights / 1e9:.1f} billion weights, {need / 2**30:.0f} GiB to train, "
                       f"more than this machine's {total / 2**30:.0f} GiB of memory")
