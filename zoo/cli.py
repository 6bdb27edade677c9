"""The `zoo` command.  Listing, --help and validation errors never import TensorFlow; every
command that uses the store checks it first (a server that does not answer is one line, in
seconds); commands that only read never create a store or a folder."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from zoo.errors import RunFailed, ZooError

MAX_MESSAGE = 600   # characters of an error message shown; the rest is cut
ALL_TASKS = "*"     # `zoo recipes --keys` without a task


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _read_store():
    """The resolved store, checked for reading: a server that answers, a file that exists."""
    from zoo import store

    s = store.resolve()
    store.check(s, write=False)
    return s


def cmd_models(args) -> int:
    from zoo.registry import list_models, model_info

    if args.registered:
        s = _read_store()
        if not s.exists():
            print(f"no registered models: there is no store at {s.describe()}")
            return 0
        from zoo.tracking import REGISTERED_HEADER, registered_rows

        rows = registered_rows(args.pattern, s)
        if not rows:
            print(f"no registered models match {args.pattern!r} in {s.describe()}")
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
    if args.keys is not None:   # every key a recipe accepts, from the schemas
        from zoo.docs import keys_text

        print(keys_text(None if args.keys == ALL_TASKS else args.keys))
        return 0
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


def _ui_address(store_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    if store_uri.startswith(("http://", "https://")):
        base = store_uri.rstrip("/")
    else:
        base = "http://127.0.0.1:5000"
    page = f"{base}/#/experiments/{experiment_id}"
    return f"{page}/runs/{run_id}" if run_id else f"{page}?workflowType=machine_learning"


def run_summary(result) -> str:
    """What a finished run tells the user: metrics, store, run and UI address, registration,
    the champion decision, and the next commands."""
    lines = [result.summary(), f"store: {result.store}",
             f"run: {result.run_id} — {_ui_address(result.store, result.experiment_id, result.run_id)}"
             + ("" if result.store.startswith("http") else " (after `zoo ui`)")]
    if result.version:
        verdict = "became champion" if result.promoted else "did not become champion"
        lines.append(f"model: {result.registered_name} version {result.version} {verdict} "
                     f"({result.promotion})")
        name = result.registered_name
        if result.generates:
            lines.append(f"next: zoo generate {name}/{result.version}   |   zoo ui")
        else:
            example = result.example if len(result.example) < 60 else result.example[:57] + "…"
            lines.append(f"next: zoo predict {name}/{result.version} {shlex.quote(example)}   |   zoo ui")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from zoo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set or [])
    from zoo import store
    from zoo.engine import run

    s = store.resolve()
    creates = not s.exists()
    try:
        result = run(recipe, fast_dev_run=args.fast_dev_run, resume=args.resume, echo=_say)
    finally:
        _default_to_new_store(s, creates)
    print(run_summary(result))
    return 0


def _default_to_new_store(s, created: bool) -> None:
    """A first `zoo run` that created ./mlruns makes it the user's default store (when none
    is set), so that later commands from any folder find its models."""
    from zoo import store

    if created and s.exists() and s.how.startswith("./mlruns") and store.default_store() is None:
        config = store.set_default(s.uri)
        _say(f"zoo: created the store {s.uri} and made it your default store ({config}); "
             "`zoo store` shows it, `zoo store use URI` changes it")


def cmd_store(args) -> int:
    from zoo import store

    if args.action == "use":
        if not args.uri:
            raise ZooError("zoo store use: give the store, a URI or a folder (zoo store use URI)")
        path = store.set_default(args.uri)
        print(f"default store: {store.normalize(args.uri)} (saved in {path})")
        return 0
    s = store.resolve()
    print(f"store: {s.uri}\nchosen: {s.how}")
    print(f"default store: {store.default_store() or 'none set'} ({store.config_path()})")
    if not s.exists():
        print("(there is no store there yet: the first `zoo run` creates it)")
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
    s = _read_store()
    if not s.exists():
        raise ZooError(f"there is no store at {s.describe()} yet: train a model with `zoo run`")
    if s.uri.startswith(("http://", "https://")):
        print(f"the store is a tracking server: open {s.uri}/#/experiments in a browser")
        return 0
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", s.uri,
           "--host", args.host, "--port", str(args.port), "--workers", "1"]
    url = f"http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning"
    _say(f"zoo: MLflow UI for {s.describe()}: open {url}")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}   # the server's deprecation notes
    os.execve(sys.executable, cmd, env)
    return 0  # pragma: no cover


def cmd_generate(args) -> int:
    from zoo.loading import load

    model = load(args.name)
    for piece in model.stream(n=args.n, temperature=args.temperature, seed=args.seed,
                              prime=args.prime, length=args.length):
        sys.stdout.write(piece)
        sys.stdout.flush()
    return 0


def cmd_predict(args) -> int:
    from zoo.loading import load
    from zoo.predict import output_kind, predict_file, predict_texts

    texts = list(args.texts)
    if args.input is None and texts == ["-"]:
        args.input, texts = "-", []
    if args.input is not None and texts:
        raise ZooError("zoo predict: give texts as arguments or --input, not both")
    if args.input is None and not texts:
        raise ZooError("zoo predict: no texts given (pass them as arguments, --input FILE, or - "
                       "for standard input)")
    if args.output is not None:
        if args.input is None:
            raise ZooError("zoo predict: --output needs --input")
        output_kind(Path(args.output))
    if args.chunk_size < 1:
        raise ZooError(f"zoo predict: --chunk-size {args.chunk_size}: must be at least 1")
    if args.address is not None and args.input is None:
        raise ZooError("zoo predict: --address needs --input")
    address = args.address or (os.environ.get("RAY_ADDRESS") or None
                               if args.input not in (None, "-") else None)
    model = load(args.name) if address is None else None
    if model is not None and not hasattr(model, "predict"):
        raise ZooError(f"{args.name}: a {model.task} model does not predict; try `zoo generate`")
    if args.input is None:
        predict_texts(model, texts, strict=args.strict, say=_say)
        return 0
    _say(predict_file(model, args.input, Path(args.output) if args.output else None,
                      column=args.column, strict=args.strict, chunk_size=args.chunk_size,
                      say=_say, address=address, model_spec=args.name))
    return 0


def cmd_export(args) -> int:
    from zoo.export import check_format, export_version

    check_format(args.format)
    _read_store()
    export_version(args.name, args.format, args.out, echo=_say)
    return 0


STORE_HELP = ("the MLflow store: a URI (sqlite:///…/mlflow.db, http://host:port) or a folder; "
              "default: MLFLOW_TRACKING_URI, else your default store (`zoo store`), else ./mlruns")


def parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="zoo", description="A Keras 3 model zoo of recurrent "
                                "networks: train from YAML recipes, track and pick in MLflow.",
                                formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, fn, store: bool = True):
        c = sub.add_parser(name, help=help, description=help, formatter_class=fmt)
        if store:
            c.add_argument("--store", metavar="URI", default=None, help=STORE_HELP)
        c.set_defaults(fn=fn)
        return c

    m = command("models", "list model builders (or, with --registered, trained models)", cmd_models)
    m.add_argument("pattern", nargs="?", default="*",
                   help="shell-style wildcard, e.g. 'bi-*'; one builder's name shows its "
                        "hyperparameters")
    m.add_argument("--registered", action="store_true",
                   help="list registered models with versions, aliases and main metric")

    r = command("recipes", "list the recipes in a folder with their task and model, or (--keys) "
                "every key a recipe accepts", cmd_recipes, store=False)
    r.add_argument("folder", nargs="?", default="recipes", help="the folder of recipes")
    r.add_argument("--keys", nargs="?", const=ALL_TASKS, default=None, metavar="TASK",
                   help="print every recipe key (type, default, bounds, meaning) instead; with "
                        "TASK, only that task's task and data keys besides the common ones")

    run = command("run", "train a recipe, track it in MLflow and register the model", cmd_run)
    run.add_argument("recipe", help="the recipe file (.yaml)")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                     help="override a recipe key, e.g. --set train.epochs=3 (repeatable)")
    run.add_argument("--fast-dev-run", action="store_true",
                     help="a couple of batches through the whole path; never promoted")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a run that died")

    st = command("store", "show the store zoo uses and how it was chosen, or set your default",
                 cmd_store, store=False)
    st.add_argument("action", nargs="?", choices=["show", "use"], default="show",
                    help="show: the store and how it is chosen; use: make URI your default")
    st.add_argument("uri", nargs="?", help="with `use`: the store, a URI or a folder")

    sw = command("sweep", "search a recipe's `sweep:` space on Ray Tune, every trial an MLflow "
                 "run; register the best", cmd_sweep)
    sw.add_argument("recipe", help="the recipe file (.yaml) with a `sweep:` section")
    sw.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                    help="override a recipe key (or sweep.KEY), e.g. --set train.epochs=2")
    sw.add_argument("--trials", type=int, default=None, help="number of trials (default: "
                    "sweep.trials)")
    sw.add_argument("--address", default=None, help="join this Ray cluster (default: "
                    "$RAY_ADDRESS, else a local Ray instance started and stopped by zoo)")
    sw.add_argument("--resume", metavar="SWEEP_RUN_ID",
                    help="continue a sweep that died: its finished trials are not run again")

    ui = command("ui", "start the MLflow UI on zoo's store (one worker)", cmd_ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ui.add_argument("--port", type=int, default=5000, help="port to listen on")

    g = command("generate", "generate text from a registered char-rnn or word-lm model",
                cmd_generate)
    g.add_argument("name", help="NAME, NAME@ALIAS, NAME/VERSION or a local model folder")
    g.add_argument("--prime", default=None, help="text to start from (char-rnn; default: a new line)")
    g.add_argument("--length", type=int, default=None,
                   help="characters to generate after the prime (char-rnn; default: 500, "
                        "at most 1,000,000,000, printed as it is made)")
    g.add_argument("--temperature", type=float, default=0.8,
                   help="0 is greedy; higher is more varied")
    g.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    g.add_argument("-n", type=int, default=1, help="number of samples (sentences for word-lm)")

    ex = command("export", "export a registered model as SavedModel, ONNX or LiteRT, to run "
                 "without zoo (logged on its run, reused when exported again)", cmd_export)
    ex.add_argument("name", help="NAME, NAME@ALIAS or NAME/VERSION")
    ex.add_argument("--format", required=True, choices=["saved_model", "onnx", "litert"],
                    help="what to write")
    ex.add_argument("--out", metavar="DIR", default=None,
                    help="a new (or empty) folder (default: ./NAME-vVERSION-FORMAT)")

    pr = command("predict", "classify texts with a registered model: given as arguments, or "
                 "files of any size streamed in chunks (--input), locally or on Ray", cmd_predict)
    pr.add_argument("name", help="NAME, NAME@ALIAS, NAME/VERSION or a local model folder")
    pr.add_argument("texts", nargs="*", help="texts, or - to read lines from standard input "
                    "(one output line per input line)")
    pr.add_argument("--input", metavar="FILE|DIR|-", default=None,
                    help="text lines (.txt or any other name), .csv/.tsv (see --column), "
                         ".jsonl or .parquet; a folder: its files in name order; - : stdin")
    pr.add_argument("--output", metavar="FILE", default=None,
                    help=".csv, .jsonl or .parquet: row (from 1), label, probabilities, error "
                         "(default: lines on standard output)")
    pr.add_argument("--column", default="text", help="the text column of CSV/TSV, JSONL and "
                    "Parquet inputs")
    pr.add_argument("--strict", action="store_true",
                    help="stop at the first bad row (empty, not a string, not UTF-8) instead of "
                         "writing an error row for it")
    pr.add_argument("--chunk-size", type=int, default=4096, help="rows predicted at a time")
    pr.add_argument("--address", default=None,
                    help="run on this Ray cluster with Ray Data ('local': a Ray started here; "
                         "default: $RAY_ADDRESS if set, else no Ray)")
    return p


def quiet_runtime() -> None:
    """Keep TensorFlow's and MLflow's start-up chatter out of the user's terminal."""
    from zoo.quiet import quiet

    quiet()


def _terminate(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt  # a killed run is marked KILLED, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_runtime()
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        pass
    try:
        from zoo import store

        store.use(getattr(args, "store", None))
        return args.fn(args)
    except ZooError as exc:
        msg = " ".join(str(exc).split())
        msg = msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE - 1] + "…"
        print(f"zoo: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        print(f"zoo: {str(exc)[:MAX_MESSAGE]}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo generate … | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    finally:
        from zoo import store

        store.use(None)


if __name__ == "__main__":
    sys.exit(main())
