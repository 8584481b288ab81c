"""Sample quality against training time: the tutorial's recipe vs fastgan (`fastgan bench quality`).

For each model and seed both start from the same initial weights (the seed) and train on the
same data for the same number of steps at batch 64 (Adam 2e-4, betas (0.5, 0.999)):

  tutorial  the tutorial's loop: a shuffled DataLoader with per-sample ToTensor + Normalize,
            D ending in a sigmoid, BCELoss against fresh ones/zeros, torch.optim.Adam, eager
  fastgan   `fastgan train` (fastgan.train.Trainer): the data on the device, fused ops,
            fastgan's Adam, the whole step in one CUDA graph on CUDA

Every --eval-every steps the generator is measured by one shared fastgan.metrics.Evaluator
(classifier FID of --eval-n images from fixed noise, the same noise for every run). The clock
counts training only (steps and data loading), not evaluations or fastgan's per-epoch outputs.
Data order and noise come from each recipe's own random streams, so the two curves of a seed
are two different draws of the same algorithm: compare them with the spread over seeds.

Recipes (the objectives and stabilizers of `fastgan train`): the options --loss, --gp, --r1,
--r1-every, --n-critic, --spectral-norm, --spectral-norm-g, --ema and --ema-start given here
make one recipe, and each --recipe='OPTIONS' (the same options, quoted) one more; each trains
through fastgan's Trainer beside the default recipe, from the same initial weights, data
order and noise streams (a recipe that only adds --ema trains exactly as the default does, so
the two curves differ by what the average does at equal steps). With recipes, the tables say
for each when its mean FID first reaches the default's final one.
"""

import argparse
import importlib.util
import os
import shlex
import statistics
import sys
import tempfile
import time

import torch

from fastgan._argtypes import OBJECTIVE_OPTIONS, add_objective_options, positive_int
from fastgan._argtypes import seed as seed_arg
from fastgan.bench.timing import (
    add_output_options,
    check_device,
    check_output_paths,
    from_json,
    machine_header,
    report,
    strict_float32,
)
from fastgan.bench.tutorial import TutorialDataset, sync, tutorial_train_step

MODELS = ("mlp", "dcgan")
IMPLS = ("tutorial", "fastgan")
KEPT = ("step", "train_seconds", "fid", "inception_score", "class_entropy")  # per evaluation
NAME = "fastgan bench quality"
DEFAULT_RECIPE = "default"


def recipe_name(options):
    """A recipe's name: its options as `fastgan train` takes them, in one fixed order."""
    words = []
    for key in OBJECTIVE_OPTIONS:
        if key in options:
            flag, value = f"--{key.replace('_', '-')}", options[key]
            text = f"{value:g}" if isinstance(value, float) else str(value)
            words.append(flag if value is True else f"{flag} {text}")
    return " ".join(words) or DEFAULT_RECIPE


class _RecipeParser(argparse.ArgumentParser):
    def error(self, message):  # raised to the caller, who names the --recipe it came from
        raise ValueError(message)


def parse_recipe(text):
    """{TrainConfig field: value} of a recipe's options ('--loss hinge --spectral-norm'), checked
    as `fastgan train` checks them; ValueError naming what is wrong."""
    p = _RecipeParser(prog="--recipe", add_help=False)
    add_objective_options(p)
    options = vars(p.parse_args(shlex.split(text)))
    if not options:
        raise ValueError("no options: give some of --loss, --gp, --r1, --n-critic, --spectral-norm, --ema, ...")
    return _checked(options)


def tutorial_run(model, seed, steps, eval_every, evaluate, images, labels, device, batch_size=64):
    """[{step, train_seconds, fid, ...}] of the tutorial's loop, measured every eval_every steps
    and at the end by evaluate(G)."""
    step = tutorial_train_step(model, device, seed=seed)
    loader = torch.utils.data.DataLoader(
        TutorialDataset(images, labels),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    evals, done, seconds = [], 0, 0.0
    t0 = time.perf_counter()
    while done < steps:
        for x, _ in loader:
            step(x.to(device))
            done += 1
            if done % eval_every == 0 or done == steps:
                sync(device)
                seconds += time.perf_counter() - t0
                evals.append({"step": done, "train_seconds": seconds, **evaluate(step.G)})
                t0 = time.perf_counter()
            if done == steps:
                break
    return evals


def fastgan_run(model, seed, steps, eval_every, evaluator, eval_n, device, dataset, data_dir, out, options=None):
    """The same through fastgan's Trainer (--eval-every), in a scratch run folder; options: a
    recipe's TrainConfig fields (parse_recipe)."""
    from fastgan.train import TrainConfig, Trainer

    options = options or {}

    cfg = TrainConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        steps=steps,
        seed=seed,
        eval_every=eval_every,
        eval_n=eval_n,
        device=str(device),
        progress=False,
        out=os.path.join(out, f"{model}-seed{seed}"),
        **options,
    )
    with open(os.devnull, "w") as log:
        trainer = Trainer(cfg, log=log, evaluator=evaluator)
        trainer.fit()
    return trainer.evals


@strict_float32()
def run(
    device,
    models=MODELS,
    seeds=(0, 1, 2),
    steps=2000,
    eval_every=500,
    eval_n=2000,
    dataset="mnist-5k",
    data_dir=None,
    impls=IMPLS,
    log=None,
    evaluator=None,
    recipes=(),
):
    """Trains each (model, seed, impl) and returns the measurements (see markdown()).
    evaluator: a fastgan.metrics.Evaluator for `dataset` (default: the default classifier's).
    recipes: dicts of TrainConfig fields (parse_recipe), each trained by fastgan beside the
    default recipe."""
    from fastgan.data import load_dataset
    from fastgan.metrics import Evaluator
    from fastgan.train import TrainConfig

    device = torch.device(device)
    machine = machine_header(device)  # the commit measured: taken before the runs, which take hours
    images, labels = load_dataset(dataset, data_dir)
    evaluator = evaluator or Evaluator(dataset, data_dir, device)
    runs = []
    with tempfile.TemporaryDirectory(prefix="fastgan-quality-") as out:
        for model in models:
            cfg = TrainConfig(model=model)

            def measure(G, cfg=cfg):
                return evaluator(G, cfg, eval_n, seed=0)

            jobs = [(impl, {}) for impl in impls] + [("fastgan", dict(r)) for r in recipes]
            for seed in seeds:
                for impl, options in jobs:
                    if impl == "tutorial":
                        evals = tutorial_run(model, seed, steps, eval_every, measure, images, labels, device)
                    else:
                        evals = fastgan_run(
                            model,
                            seed,
                            steps,
                            eval_every,
                            evaluator,
                            eval_n,
                            device,
                            dataset,
                            data_dir,
                            os.path.join(out, str(len(runs))),
                            options,
                        )
                    evals = [{k: e[k] for k in KEPT} for e in evals]
                    name = recipe_name(options)
                    runs.append(
                        {"model": model, "impl": impl, "recipe": name, "options": options, "seed": seed, "evals": evals}
                    )
                    if log:
                        last = evals[-1]
                        print(
                            f"{model} {impl}{'' if name == DEFAULT_RECIPE else ' ' + name} seed {seed}: "
                            f"step {last['step']} FID {last['fid']:.2f} in {last['train_seconds']:.1f} s",
                            file=log,
                            flush=True,
                        )
    info = evaluator.classifier_info
    return {
        "benchmark": NAME,
        "machine": machine,
        "dataset": dataset,
        "steps": steps,
        "eval_every": eval_every,
        "eval_n": eval_n,
        "seeds": list(seeds),
        "fid_real": evaluator.fid_real(eval_n),
        "classifier_accuracy": info["test_accuracy"],
        "runs": runs,
    }


def _mean_sd(values):
    m = statistics.fmean(values)
    return (m, statistics.stdev(values)) if len(values) > 1 else (m, 0.0)


def _label(run):
    """What a run's curve is called: its implementation, or its recipe's options."""
    recipe = run.get("recipe", DEFAULT_RECIPE)
    return run["impl"] if recipe == DEFAULT_RECIPE else recipe


def summary(result):
    """{(model, label): {step: (fid mean, fid sd, seconds mean)}} over seeds; label: the impl
    (tutorial, fastgan) or a recipe's name."""
    out = {}
    for r in result["runs"]:
        for e in r["evals"]:
            out.setdefault((r["model"], _label(r)), {}).setdefault(e["step"], []).append(e)
    return {
        key: {
            step: (*_mean_sd([e["fid"] for e in es]), statistics.fmean(e["train_seconds"] for e in es))
            for step, es in sorted(by_step.items())
        }
        for key, by_step in out.items()
    }


def _header(result):
    return (
        f"Machine: {result['machine']}; data: {result['dataset']}; classifier test accuracy "
        f"{result['classifier_accuracy']:.2%}; classifier FID of {result['eval_n']} generated images, "
        f"mean ± sd over seeds {', '.join(map(str, result['seeds']))} (real training images: "
        f"{result['fid_real']:.2f}); seconds: training time to that step, mean over seeds"
    )


def markdown(result):
    s = summary(result)
    if any(k[1] not in IMPLS for k in s):
        return recipes_markdown(result, s)
    impls = [i for i in IMPLS if any(k[1] == i for k in s)]
    lines = [
        _header(result),
        "",
        "| model | step | "
        + " | ".join(f"{i} FID" for i in impls)
        + " | "
        + " | ".join(f"{i} s" for i in impls)
        + (" | speed-up |" if len(impls) == 2 else " |"),
        "|---|---|" + "---|" * (2 * len(impls) + (len(impls) == 2)),
    ]
    for model in dict.fromkeys(k[0] for k in s):
        for step in sorted({k for (m, _), by_step in s.items() if m == model for k in by_step}):
            cells = [s.get((model, i), {}).get(step) for i in impls]
            fids = [f"{c[0]:.1f} ± {c[1]:.1f}" if c else "–" for c in cells]
            secs = [f"{c[2]:.1f}" if c else "–" for c in cells]
            ratio = []
            if len(impls) == 2:
                ratio = [f"{cells[0][2] / cells[1][2]:.1f}x" if all(cells) else "–"]
            lines.append(f"| {model} | {step} | " + " | ".join(fids + secs + ratio) + " |")
    return "\n".join(lines)


def reaching(by_step, target):
    """(step, seconds) of the first evaluation whose mean FID is at most target, or None."""
    for step, (fid, _, seconds) in sorted(by_step.items()):
        if fid <= target:
            return step, seconds
    return None


def _shown(label):
    return f"{DEFAULT_RECIPE} (fastgan)" if label == "fastgan" else label


def recipes_markdown(result, s=None):
    """With recipes: each one's curve beside the default's (fastgan), then per recipe its
    final FID, when its mean FID first reaches the default's final mean, and its FID minus the
    default's at the default's last step."""
    s = s or summary(result)
    lines = [_header(result), "", "| model | recipe | step | FID | s |", "|---|---|---|---|---|"]
    for (model, label), by_step in s.items():
        for step, (fid, sd, seconds) in by_step.items():
            lines.append(f"| {model} | {_shown(label)} | {step} | {fid:.1f} ± {sd:.1f} | {seconds:.1f} |")
    lines += [
        "",
        "| model | recipe | final step | final FID | s | reaches the default's final FID at | "
        "FID - default's at its final step |",
        "|---|---|---|---|---|---|---|",
    ]
    for (model, label), by_step in s.items():
        last = max(by_step)
        fid, sd, seconds = by_step[last]
        base = s.get((model, "fastgan"))
        reach, delta = "–", "–"
        if base:
            base_last = max(base)
            hit = reaching(by_step, base[base_last][0])
            reach = f"step {hit[0]}, {hit[1]:.1f} s" if hit else f"not within {last} steps"
            if base_last in by_step:
                delta = f"{by_step[base_last][0] - base[base_last][0]:+.1f}"
        lines.append(
            f"| {model} | {_shown(label)} | {last} | {fid:.1f} ± {sd:.1f} | {seconds:.1f} | {reach} | {delta} |"
        )
    return "\n".join(lines)


def plot(result, path):
    """A PNG of classifier FID (mean over seeds, ± sd band) against training time, one panel
    per model, one curve per recipe; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fastgan.train.images import save_figure

    s = summary(result)
    models = list(dict.fromkeys(k[0] for k in s))
    fig = Figure(figsize=(5 * len(models), 4), dpi=100)
    FigureCanvasAgg(fig)
    for i, model in enumerate(models, 1):
        ax = fig.add_subplot(1, len(models), i)
        labels = [k[1] for k in s if k[0] == model]
        colors = ("tab:gray", "tab:green", "tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown") * 3
        for impl, color in zip(labels, colors):
            by_step = s[(model, impl)]
            steps = sorted(by_step)
            mean = [by_step[k][0] for k in steps]
            sd = [by_step[k][1] for k in steps]
            t = [by_step[k][2] for k in steps]
            ax.plot(t, mean, "o-", color=color, label=impl)
            ax.fill_between(
                t, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)], color=color, alpha=0.2
            )
        ax.set_title(f"{model} on {result['dataset']} ({len(result['seeds'])} seeds)")
        ax.set_xlabel("training time, s")
        ax.set_ylabel("classifier FID (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _at_least_2(text):
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a covariance needs 2 samples), got {value}")
    return value


def _recipes(parser, args):
    """The recipes asked for: the objective options given directly (one recipe), then each
    --recipe; parser.error naming the bad one."""
    recipes = []
    direct = {k: v for k, v in vars(args).items() if k in OBJECTIVE_OPTIONS}
    texts = ([("the options given", direct)] if direct else []) + [(f"--recipe {t!r}", t) for t in args.recipe]
    for where, given in texts:
        try:
            options = parse_recipe(given) if isinstance(given, str) else _checked(given)
        except ValueError as e:
            parser.error(f"{where}: {e}")
        if recipe_name(options) in map(recipe_name, recipes):
            parser.error(f"{where}: the recipe {recipe_name(options)!r} is given twice")
        recipes.append(options)
    return recipes


def _checked(options):
    from fastgan.train import ConfigError, TrainConfig

    try:
        TrainConfig(**options).validate()
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return options


def main(argv=None):
    from fastgan.data import DATASETS

    p = argparse.ArgumentParser(prog=NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", action="append", choices=MODELS, help="default: mlp and dcgan")
    p.add_argument("--impl", action="append", choices=IMPLS, help="default: both")
    p.add_argument("--seeds", type=seed_arg, nargs="+", default=[0, 1, 2], help="default: 0 1 2")
    p.add_argument("--steps", type=positive_int, default=2000, help="training steps per run (default 2000)")
    p.add_argument("--eval-every", type=positive_int, default=500, help="steps between evaluations (default 500)")
    p.add_argument("--eval-n", type=_at_least_2, default=2000, help="images per evaluation (default 2000)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist-5k", help="mnist-5k (default), mnist or fashion-mnist")
    p.add_argument("--data-dir", help="IDX files for mnist / fashion-mnist")
    add_output_options(p)
    p.add_argument("--plot", help="also draw FID against training time into this PNG")
    add_objective_options(
        p.add_argument_group("a recipe to compare with the default (fastgan train's options; see above)")
    )
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="'OPTIONS'",
        help="one more recipe, its options quoted: --recipe='--loss wgan --gp 10 --n-critic 5' (repeatable)",
    )
    a = p.parse_args(argv)
    check_output_paths(p, a, ("--json", "--markdown", "--plot"))
    if a.plot and not a.plot.lower().endswith(".png"):
        p.error(f"--plot must be a .png file name (the plot is written as PNG), got {a.plot!r}")
    if a.plot and importlib.util.find_spec("matplotlib") is None:
        p.error(f"--plot {a.plot}: needs matplotlib (pip install matplotlib)")
    result = from_json(
        a,
        markdown,
        p,
        keys=("machine", "dataset", "eval_n", "seeds", "fid_real", "classifier_accuracy", "runs"),
        rows="runs",
        row_keys=("model", "impl", "evals"),
    )
    if result is None:
        repeated = [s for i, s in enumerate(a.seeds) if s in a.seeds[:i]]
        if repeated:
            p.error(f"--seeds: seed {repeated[0]} given twice")
        if a.data_dir is not None and not os.path.isdir(a.data_dir):
            p.error(f"--data-dir {a.data_dir}: no such folder")
        if a.dataset != "mnist-5k" and a.data_dir is None:
            p.error(f"--dataset {a.dataset}: needs --data-dir (a folder with its IDX files)")
        recipes = _recipes(p, a)
        impls = a.impl or (("fastgan",) if recipes else IMPLS)  # with recipes, the default is fastgan's
        device = check_device(p, a.device)
        result = run(
            device,
            tuple(dict.fromkeys(a.model or MODELS)),
            a.seeds,
            a.steps,
            a.eval_every,
            a.eval_n,
            a.dataset,
            a.data_dir,
            tuple(dict.fromkeys(impls)),
            log=sys.stderr,
            recipes=recipes,
        )
        report(result, markdown, a.json, a.markdown)
    if a.plot:
        plot(result, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
