"""What ``model.init_from`` buys a sentiment classifier: the shipped sentiment recipe trained
from random and warm-started from a word-level language model of unlabelled review text.

The unlabelled text is the training split's sentences of the default data (Rotten Tomatoes,
the same seeded split the classifier uses, so no validation or test sentence is ever read),
written one per line to a file; ``word-lm`` learns it, and is registered in a throwaway store.
Then the recipe runs twice in one process, cold and warm, with every other key the same:

    python bench/warm_start_sentiment.py [--recipe recipes/lstm_sentiment.yaml] [--seeds 1 2]

The last line reads like ``cold 0.7900 warm 0.8000 (mean test accuracy over 2 seeds)``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/lstm_sentiment.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--lm-minutes", type=float, default=2.0, help="the word-lm's time budget")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="zoo-warm-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    from zoo.data.sentiment import load_rotten_tomatoes, stratified_split
    from zoo.engine import run
    from zoo.recipe import load_recipe

    base = load_recipe(args.recipe)
    results: dict[str, list[float]] = {"cold": [], "warm": []}
    for seed in args.seeds:
        train, _, _ = stratified_split(load_rotten_tomatoes(), base.data.val_fraction,
                                       base.data.test_fraction, seed)
        (work / "unlabelled.txt").write_text("\n".join(t for t, _ in train) + "\n")
        name = f"review-lm-{seed}"
        lm = work / f"{name}.yaml"
        lm.write_text(f"""
task: {{name: word-lm, embedding_dim: {base.task_options.embedding_dim}}}
data: {{path: unlabelled.txt, vocabulary_size: {base.data.vocabulary_size},
        max_length: {base.data.max_length}, val_fraction: 0.05, test_fraction: 0.05}}
model: {{name: {base.model.removeprefix('bi-')}, units: {base.hparams['units']}}}
train: {{epochs: auto, time_budget: {args.lm_minutes}, batch_size: 32, seed: {seed}, verbose: 0,
        optimizer: {{learning_rate: 0.003, clipnorm: 5.0}}}}
track: {{registered_name: {name}}}
""")
        res = run(load_recipe(lm), echo=lambda *a: None)
        print(f"seed {seed}: word-lm test perplexity {res.test_metrics['perplexity']:.1f} "
              f"(unigram {res.test_metrics['unigram_perplexity']:.1f})", flush=True)
        for kind, extra in (("cold", []), ("warm", [f"model.init_from={name}@champion"])):
            r = load_recipe(args.recipe, [f"train.seed={seed}", "train.verbose=0",
                                          "track.promote=never", *extra])
            acc = run(r, echo=lambda *a: None).test_metrics["accuracy"]
            results[kind].append(acc)
            print(f"seed {seed}: {kind} test accuracy {acc:.4f}", flush=True)
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    print(f"cold {mean['cold']:.4f} warm {mean['warm']:.4f} (mean test accuracy over "
          f"{len(args.seeds)} seed(s), {args.recipe})")


if __name__ == "__main__":
    main()
