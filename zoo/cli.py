"""The `zoo` command.  Listing, --help and validation errors never import TensorFlow."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from zoo.errors import RunFailed, ZooError


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_models(args) -> int:
    from zoo.registry import list_models, model_info

    if args.registered:
        from zoo.tracking import REGISTERED_HEADER, registered_rows, tracking_uri

        rows = registered_rows(args.pattern)
        if not rows:
            print(f"no registered models match {args.pattern!r} in {tracking_uri()}")
        else:
            print(_table(rows, REGISTERED_HEADER))
        return 0
    names = list_models(args.pattern)
    if not names:
        print(f"no model builder matches {args.pattern!r}", file=sys.stderr)
        return 1
    if names == [args.pattern]:  # one builder by name: its hyperparameters
        info = model_info(args.pattern)
        print(f"{info.name}: {info.description}\nlayer: {info.layer}; cuDNN on a GPU: "
              f"{'yes' if info.cudnn else 'no'}; from: {info.source}\n")
        print(_table([list(r) for r in info.describe()],
                     ["hyperparameter", "type", "default", "meaning"]))
        return 0
    rows = []
    for n in names:
        info = model_info(n)
        rows.append([n, info.layer, "yes" if info.cudnn else "no", info.description])
    print(_table(rows, ["name", "layer", "cuDNN", "description"]))
    return 0


def cmd_recipes(args) -> int:
    folder = Path(args.folder)
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not files:
        print(f"no recipes in {folder}/", file=sys.stderr)
        return 1
    from zoo.recipe import load_recipe

    rows = []
    for f in files:
        try:
            r = load_recipe(f)
            rows.append([str(f), r.task, r.model, r.registered_name])
        except ZooError as exc:
            rows.append([str(f), "?", "?", f"invalid: {exc}"])
    print(_table(rows, ["recipe", "task", "model", "registered as"]))
    return 0


def cmd_run(args) -> int:
    from zoo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set or [])
    from zoo.engine import run

    result = run(recipe, fast_dev_run=args.fast_dev_run, resume=args.resume,
                 echo=lambda msg: print(msg, file=sys.stderr))
    print(result.summary())
    return 0


def cmd_sweep(args) -> int:
    from zoo.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.recipe, args.set or [], trials=args.trials)
    result = run_sweep(sweep, address=args.address, resume=args.resume,
                       echo=lambda msg: print(msg, file=sys.stderr), out=print)
    best = result["best"]
    print(f"sweep {result['run_id']} (experiment {result['experiment_id']}): "
          f"{len(result['trials'])} trial(s); "
          + (f"best {sweep.metric}={best.value:.4f}, registered {result['registered_name']} "
             f"version {result['version']}{' (champion)' if result['promoted'] else ''}"
             if best is not None else "no trial finished"))
    return 0 if best is not None else 1


def cmd_ui(args) -> int:
    from zoo.tracking import tracking_uri

    uri = tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port)]
    print(f"zoo: MLflow UI on http://{args.host}:{args.port} for {uri}", file=sys.stderr)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_generate(args) -> int:
    from zoo.loading import load

    model = load(args.name)
    texts = model.sample(n=args.n, temperature=args.temperature, seed=args.seed,
                         prime=args.prime, length=args.length)
    print("\n\n".join(texts))
    return 0


def cmd_predict(args) -> int:
    from zoo.loading import load

    texts = list(args.texts)
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ZooError("zoo predict: no texts given (pass them as arguments, or - for stdin)")
    model = load(args.name)
    if not hasattr(model, "predict"):
        raise ZooError(f"{args.name}: a {model.task} model does not predict; try `zoo generate`")
    for text, pred in zip(texts, model.predict(texts)):
        if isinstance(pred, dict) and "label" in pred:
            probs = "  ".join(f"{k}={v:.3f}" for k, v in pred["probabilities"].items())
            print(f"{pred['label']}\t{probs}\t{text}")
        else:
            print(f"{pred}\t{text}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="A Keras 3 model zoo of recurrent "
                                "networks: train from YAML recipes, track and pick in MLflow.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list model builders (or registered models)")
    m.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'bi-*'")
    m.add_argument("--registered", action="store_true",
                   help="list registered models with versions, aliases and main metric")
    m.set_defaults(fn=cmd_models)

    r = sub.add_parser("recipes", help="list the recipes in a folder with their task and model")
    r.add_argument("folder", nargs="?", default="recipes")
    r.set_defaults(fn=cmd_recipes)

    run = sub.add_parser("run", help="train a recipe, track it in MLflow and register the model")
    run.add_argument("recipe")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                     help="override a recipe key, e.g. --set train.epochs=3 (repeatable)")
    run.add_argument("--fast-dev-run", action="store_true",
                     help="a couple of batches through the whole path; never promoted")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a run that died")
    run.set_defaults(fn=cmd_run)

    sw = sub.add_parser("sweep", help="search a recipe's `sweep:` space on Ray Tune, every "
                        "trial an MLflow run; register the best")
    sw.add_argument("recipe")
    sw.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                    help="override a recipe key (or sweep.KEY), e.g. --set train.epochs=2")
    sw.add_argument("--trials", type=int, default=None, help="number of trials (default: "
                    "sweep.trials)")
    sw.add_argument("--address", default=None, help="join this Ray cluster (default: "
                    "$RAY_ADDRESS, else a local Ray instance started and stopped by zoo)")
    sw.add_argument("--resume", metavar="SWEEP_RUN_ID",
                    help="continue a sweep that died: its finished trials are not run again")
    sw.set_defaults(fn=cmd_sweep)

    ui = sub.add_parser("ui", help="start the MLflow UI on zoo's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(fn=cmd_ui)

    g = sub.add_parser("generate", help="generate text from a registered char-rnn/word-lm model")
    g.add_argument("name", help="NAME, NAME@ALIAS, NAME/VERSION or a local model folder")
    g.add_argument("--prime", default=None,
                   help="text to start from (char-rnn; default: a new line)")
    g.add_argument("--length", type=int, default=None,
                   help="characters to generate after the prime (char-rnn; default: 500)")
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("-n", type=int, default=1, help="number of samples (sentences for word-lm)")
    g.set_defaults(fn=cmd_generate)

    pr = sub.add_parser("predict", help="classify texts with a registered model")
    pr.add_argument("name")
    pr.add_argument("texts", nargs="+", help="texts, or - to read lines from standard input")
    pr.set_defaults(fn=cmd_predict)
    return p


def quiet_runtime() -> None:
    """Keep TensorFlow's and MLflow's start-up chatter out of the user's terminal."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_runtime()
    try:
        return args.fn(args)
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        print(f"zoo: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
