"""Every recipe, task and sweep key is documented where it is declared, and the documentation
printed (`zoo recipes --keys`) and generated (docs/reference/) lists every one of them."""

from __future__ import annotations

import pytest

from zoo import docs
from zoo.cli import main
from zoo.recipe import Recipe, Track, Train
from zoo.registry import list_models, model_info
from zoo.schema import Strict, keys, undocumented
from zoo.sweep import SweepSection
from zoo.tasks import get_task, list_tasks


def _schemas():
    """Every schema a recipe is validated with: each task's, the recipe's, the sweep's."""
    out = {"recipe": Recipe, "train": Train, "track": Track, "sweep": SweepSection}
    for name in list_tasks():
        out[f"{name} task"] = get_task(name).Options
        out[f"{name} data"] = get_task(name).Data
    return out


@pytest.mark.parametrize("name", sorted(_schemas()))
def test_every_field_has_a_description(name):
    assert undocumented(_schemas()[name]) == []


def test_builders_hyperparameters_have_descriptions():
    for name in list_models():
        assert undocumented(model_info(name).schema) == [], name


def test_one_strict_base_for_every_section():
    for name, schema in _schemas().items():
        if schema is not Recipe:   # the validated whole, which holds the sections
            assert issubclass(schema, Strict), name
    for name in list_models():
        assert issubclass(model_info(name).schema, Strict), name


def test_undocumented_field_is_caught():
    from pydantic import Field

    class Half(Strict):
        said: int = Field(1, description="documented")
        unsaid: int = 2

    assert undocumented(Half, "x") == ["x.unsaid"]


def test_keys_walk_nested_sections_with_bounds_and_defaults():
    rows = {r.key: r for r in keys(Train, "train")}
    assert rows["train.optimizer.learning_rate"].default == "0.001"
    assert rows["train.optimizer.learning_rate"].bounds == "> 0"
    assert rows["train.time_budget"].type == "float or null"
    assert rows["train.lr_schedule.name"].default == "required"
    assert rows["train.epochs"].type == "int or one of auto"


def test_recipes_keys_prints_every_key(capsys):
    assert main(["recipes", "--keys"]) == 0
    out = capsys.readouterr().out
    missing = [k for k in docs.all_recipe_keys() if f"\n{k}  (" not in out]
    assert missing == []
    for name in list_tasks():
        assert f"== data: {name}" in out
    assert "data.carry_state  (bool; default false)" in out


def test_recipes_keys_for_one_task(capsys):
    assert main(["recipes", "--keys", "sentiment"]) == 0
    out = capsys.readouterr().out
    assert "\ndata.text_column  (" in out and "\ndata.carry_state  (" not in out
    assert "train.time_budget" in out and "sweep.scheduler" in out


def test_recipes_keys_unknown_task_is_one_line(capsys):
    assert main(["recipes", "--keys", "sentimnt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean: sentiment" in err[0]


@pytest.mark.slow
def test_recipes_keys_imports_neither_tensorflow_nor_ray():
    import subprocess
    import sys

    code = ("import sys; from zoo.cli import main; main(['recipes', '--keys']); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
