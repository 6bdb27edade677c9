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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zoo.errors import ZooError, did_you_mean

SECTIONS = ("extends", "task", "data", "model", "train", "track")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Optimizer(_Strict):
    name: Literal["adam", "adamw", "rmsprop", "sgd", "adagrad"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    clipnorm: float | None = Field(None, gt=0)
    clipvalue: float | None = Field(None, gt=0)


class EarlyStopping(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0)
    restore_best_weights: bool = True


class Train(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Optimizer = Optimizer()
    early_stopping: EarlyStopping | None = None
    seed: int = Field(1, ge=0)
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    distribute: Literal["none", "mirrored"] = "none"
    verbose: int = Field(1, ge=0, le=2)


class Track(_Strict):
    experiment: str | None = None
    registered_name: str | None = None
    promote: Literal["if-better", "always", "never"] = "if-better"


class Recipe(BaseModel):
    """A validated recipe.  ``task_options`` and ``data`` are validated by the task's models."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str
    task: str
    task_options: BaseModel
    data: BaseModel
    model: str
    hparams: dict[str, Any]
    train: Train
    track: Track
    raw: dict[str, Any]

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
            "model": {"name": self.model, **self.hparams},
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


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ZooError(f"{path}: recipe file not found")
    if path.is_dir():
        raise ZooError(f"{path}: is a directory, expected a recipe .yaml file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ZooError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ZooError(f"{path}:{where}: invalid YAML: {problem}") from None
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
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
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


def _format_error(path: Path, section: str, exc: ValidationError, known: list[str]) -> ZooError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (section, *err["loc"]))
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        return ZooError(f"{path}: {loc}: unknown key{did_you_mean(key, known)}")
    if err["type"] == "missing":
        return ZooError(f"{path}: {loc}: required key is missing")
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:]
    return ZooError(f"{path}: {loc}: {msg} (got {err.get('input')!r})")


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


def _check_hparam_values(path: Path, name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    from zoo.registry import check_hparams, model_info

    defaults = model_info(name).params
    for key, value in hparams.items():
        if key not in defaults:
            try:
                check_hparams(name, {key: value})
            except ZooError as exc:
                raise ZooError(f"{path}: model.{key}: {exc}") from None
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ZooError(f"{path}: model.{key}: expected {type(default).__name__}, got {value!r}")
        if key in ("units", "layers") and value < 1:
            raise ZooError(f"{path}: model.{key}: must be at least 1 (got {value!r})")
        if key in ("dropout", "recurrent_dropout") and not 0.0 <= value < 1.0:
            raise ZooError(f"{path}: model.{key}: must be in [0, 1) (got {value!r})")
    return {**defaults, **hparams}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, resolve and validate a recipe.  Raises ZooError with one clear line on any mistake."""
    from zoo.registry import model_info
    from zoo.tasks import get_task, list_tasks

    path = Path(path)
    data = _load_with_extends(path)
    for assignment in overrides:
        apply_override(data, assignment, path)

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
    hparams = _check_hparam_values(path, model_name, hparams)

    recipe = Recipe(
        path=str(path),
        task=str(task_name),
        task_options=_validate(task_cls.Options, task_options, path, "task"),
        data=_validate(task_cls.Data, data.get("data"), path, "data"),
        model=model_name,
        hparams=hparams,
        train=_validate(Train, data.get("train"), path, "train"),
        track=_validate(Track, data.get("track"), path, "track"),
        raw=data,
    )
    task_cls.check(recipe)
    return recipe
