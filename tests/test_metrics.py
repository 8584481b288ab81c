"""fastgan.metrics: float64 Fréchet distance and matrix square root, the cached classifier
(hit, miss, corrupt-file recovery), evaluate() and the `fastgan eval` CLI with its bad inputs.
Tiny classifier settings keep the whole file well under a minute on 2 CPU cores."""

import dataclasses
import math
import os
import warnings

import pytest
import torch
from test_cli import TINY, assert_usage_error, fastgan

from fastgan import metrics
from fastgan.cli import main as cli_main
from fastgan.metrics import classifier as clf

TINY_CLF = metrics.ClassifierSettings(epochs=1, batch_size=32, channels=(8, 16), features=32)


@pytest.fixture(scope="module")
def data():
    return metrics.split("mnist-5k")


@pytest.fixture(scope="module")
def tiny(data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    model, info = metrics.get_classifier("mnist-5k", cache=cache, settings=TINY_CLF, data=data)
    return model, info, cache


def random_spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 1e-3 * torch.eye(d, dtype=torch.float64)


def test_mnist_5k_split_is_deterministic_and_disjoint(data):
    (train_x, train_y), (test_x, test_y) = data
    assert len(train_y) == 4000 and len(test_y) == 1000
    assert torch.bincount(test_y).tolist() == [100] * 10
    (train_x2, _), (test_x2, _) = metrics.split("mnist-5k")
    assert torch.equal(test_x, test_x2) and torch.equal(train_x, train_x2)


def test_fid_with_itself_is_zero_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 16, generator=g) @ torch.randn(16, 16, generator=g)
    b = torch.randn(400, 16, generator=g) * 1.5 + 0.3
    assert metrics.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
    ab, ba = metrics.fid_from_features(a, b), metrics.fid_from_features(b, a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-9)


def test_fid_of_singular_covariances_is_finite():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 32, generator=g)  # rank 4 < 32
    b = torch.randn(6, 32, generator=g)
    d = metrics.fid_from_features(a, b)
    assert d == d and d < float("inf") and d >= 0


def test_fid_grows_with_noise(tiny, data):
    model = tiny[0]
    (_, _), (test_x, _) = data
    x = clf.to_input(test_x)
    ref, _ = metrics.classify(model, x[::2])
    g = torch.Generator().manual_seed(0)
    other = x[1::2]
    fids = []
    for sigma in (0.0, 0.3, 0.8):
        noisy = (other + sigma * torch.randn(other.shape, generator=g)).clamp(-1, 1)
        fids.append(metrics.fid_from_features(ref, metrics.classify(model, noisy)[0]))
    assert fids[0] < fids[1] < fids[2], fids


def test_sqrtm_matches_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    for seed, d in ((0, 3), (1, 16), (2, 64)):
        a = random_spd(d, seed)
        r = metrics.sqrtm_psd(a)
        assert r.dtype == torch.float64
        expected = torch.from_numpy(linalg.sqrtm(a.numpy()).real)
        torch.testing.assert_close(r, expected, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(r @ r, a, rtol=1e-9, atol=1e-9)


def test_frechet_distance_matches_scipy_formula():
    linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = random_spd(20, 3), random_spd(20, 4)
    mu1, mu2 = torch.randn(20, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    covmean = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = ((mu1 - mu2) ** 2).sum().item() + s1.trace().item() + s2.trace().item() - 2 * covmean.trace()
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_inception_score_and_entropy():
    confident = torch.eye(10).repeat(5, 1)
    assert metrics.inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert metrics.inception_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0)
    assert metrics.inception_score(torch.eye(10)[[3] * 50]) == pytest.approx(1.0)
    assert metrics.entropy_bits([5] * 10) == pytest.approx(3.321928, abs=1e-6)
    assert metrics.entropy_bits([0, 0, 7, 0]) == 0.0
    assert metrics.class_histogram(torch.tensor([1, 1, 9])) == [0, 2, 0, 0, 0, 0, 0, 0, 0, 1]


def test_running_stats_in_chunks_match_all_at_once():
    """Chunks of any size (one row, uneven) merge to the two-pass statistics, also far from 0."""
    g = torch.Generator().manual_seed(2)
    f = (
        torch.randn(203, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    ) + 1e4
    mu = f.mean(0)
    cov = (f - mu).T @ (f - mu) / (len(f) - 1)
    for sizes in ((203,), (1, 202), (100, 3, 0, 99, 1), (7,) * 29):
        stats = metrics.RunningStats()
        for chunk in torch.split(f, list(sizes)):
            stats.update(chunk)
        m, c = stats.stats()
        torch.testing.assert_close(m, mu, rtol=1e-12, atol=1e-8)
        torch.testing.assert_close(c, cov, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 rows"):
        metrics.RunningStats().stats()


def test_class_scores_in_chunks_match_all_at_once():
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(torch.randn(97, 10, generator=g, dtype=torch.float64) * 3, 1)
    labels = torch.randint(0, 10, (97,), generator=g)
    scores = metrics.ClassScores()
    for a, b in zip(p.split(20), labels.split(20)):
        scores.update(a, b)
    py = p.mean(0)
    kl = (p * (p.log() - py.log())).sum(1).mean()
    assert scores.inception_score() == pytest.approx(kl.exp().item(), rel=1e-12)
    assert scores.histogram() == metrics.class_histogram(p.argmax(1))
    assert scores.label_accuracy() == pytest.approx((p.argmax(1) == labels).double().mean().item())


def test_evaluator_measures_batch_by_batch(runs, tiny, monkeypatch):
    """Memory does not grow with --eval-n / --n: no more than batch_size images at a time, and
    the metrics are those of all the images at once."""
    import importlib

    ev = importlib.import_module("fastgan.metrics.evaluate")  # the module, not the function
    G, cfg, _ = metrics.load_generator(str(runs / "cgan" / "checkpoint.pt"), "cpu")
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF, batch_size=16)
    images, labels = metrics.generate(G, cfg, 70, seed=3, batch_size=70)
    features, probs = metrics.classify(evaluator.model, images)
    seen = []
    real = ev.classify
    monkeypatch.setattr(ev, "classify", lambda model, x, bs: seen.append(len(x)) or real(model, x, bs))
    m = evaluator(G, cfg, 70, seed=3)
    assert max(seen) == 16 and sum(seen) == 70
    assert m["fid"] == pytest.approx(
        metrics.frechet_distance(*metrics.feature_stats(features), *evaluator.real_stats), rel=1e-9
    )
    assert m["inception_score"] == pytest.approx(metrics.inception_score(probs), rel=1e-12)
    assert m["class_histogram"] == metrics.class_histogram(probs.argmax(1))
    assert m["label_accuracy"] == pytest.approx((probs.argmax(1) == labels).double().mean().item())


def test_getting_the_classifier_leaves_the_global_random_stream_alone(tmp_path, data):
    # fastgan train --eval-every sets it up mid-run: a draw from torch's global generator would
    # change the training's dropout masks depending on whether the classifier was cached
    for cached in (False, True):
        before = torch.get_rng_state()
        _, info = metrics.get_classifier("mnist-5k", cache=tmp_path, settings=TINY_CLF, data=data)
        assert info["cached"] == cached and torch.equal(torch.get_rng_state(), before)


def test_classifier_cache_hit_and_miss(tiny, data):
    model, info, cache = tiny
    assert not info["cached"] and os.path.isfile(info["path"])
    assert 0.8 < info["test_accuracy"] <= 1.0
    mtime = os.stat(info["path"]).st_mtime_ns
    calls = clf.TRAIN_CALLS
    model2, info2 = metrics.get_classifier("mnist-5k", cache=cache, settings=TINY_CLF, data=data)
    assert info2["cached"] and clf.TRAIN_CALLS == calls and info2["path"] == info["path"]
    assert os.stat(info["path"]).st_mtime_ns == mtime
    assert info2["test_accuracy"] == info["test_accuracy"]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    # another seed is another classifier, in another file
    other = metrics.ClassifierSettings(**{**TINY_CLF.__dict__, "seed": 1})
    _, info3 = metrics.get_classifier("mnist-5k", cache=cache, settings=other, data=data)
    assert not info3["cached"] and clf.TRAIN_CALLS == calls + 1
    assert info3["path"] != info["path"] and os.path.isfile(info3["path"])
    assert not [p for p in os.listdir(cache) if ".tmp" in p]


def test_classifier_is_deterministic(data):
    (x, y), _ = data
    settings = metrics.ClassifierSettings(epochs=1, channels=(2, 4), features=8, max_train=256)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = clf.train_classifier(x, y, settings)
        torch.set_num_threads(2)
        b = clf.train_classifier(x, y, settings)  # the same weights whatever the caller's threads
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "c"))
    assert metrics.cache_dir() == str(tmp_path / "c")
    assert metrics.cache_dir(tmp_path / "d") == str(tmp_path / "d")
    monkeypatch.delenv("FASTGAN_CACHE")
    assert metrics.cache_dir() == os.path.expanduser(os.path.join("~", ".cache", "fastgan"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_corrupt_cache_is_retrained(tiny, data, tmp_path, damage):
    _, info, cache = tiny
    path = tmp_path / os.path.basename(info["path"])
    good = open(info["path"], "rb").read()
    if damage == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        torch.save({"format": "something-else"}, path)
    calls = clf.TRAIN_CALLS
    with pytest.warns(RuntimeWarning, match="unreadable.*retraining"):
        _, info2 = metrics.get_classifier("mnist-5k", cache=tmp_path, settings=TINY_CLF, data=data)
    assert not info2["cached"] and clf.TRAIN_CALLS == calls + 1
    assert info2["test_accuracy"] == info["test_accuracy"]  # deterministic retraining
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info3 = metrics.get_classifier("mnist-5k", cache=tmp_path, settings=TINY_CLF, data=data)
    assert info3["cached"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = fastgan("train", *TINY, "--steps", 5, "--out", out / "mlp")  # the real command
    assert result.returncode == 0, result.stderr
    cgan = [a if a != "mlp" else "cgan" for a in TINY]
    assert cli_main(["train", *cgan, "--steps", "5", "--out", str(out / "cgan")]) == 0  # in-process: faster
    return out


def test_evaluate_conditional(runs, tiny):
    m = metrics.evaluate(str(runs / "cgan" / "checkpoint.pt"), n=60, cache_dir=tiny[2], classifier=TINY_CLF)
    assert m["model"] == "cgan" and m["step"] == 5 and m["n"] == 60 and m["classifier_cached"]
    assert 0.0 <= m["label_accuracy"] <= 1.0
    assert sum(m["class_histogram"]) == 60
    assert 1.0 <= m["inception_score"] <= 10.0 + 1e-9
    assert m["fid"] > m["fid_real"] >= 0


def test_eval_cli(runs, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "results" / "m.json"  # a folder that does not exist yet is made
    result = fastgan(
        "eval",
        "--checkpoint",
        runs / "mlp" / "checkpoint.pt",
        "--n",
        100,
        "--cache-dir",
        cache,
        "--classifier-epochs",
        1,
        "--json",
        out,
    )
    assert result.returncode == 0, result.stderr
    for word in (
        "mlp on mnist-5k, step 5, 100 samples",
        "classifier       trained",
        "fid ",
        "inception_score",
        "class_entropy",
        "class_histogram",
    ):
        assert word in result.stdout, (word, result.stdout)
    assert "label_accuracy" not in result.stdout
    import json

    m = json.loads(out.read_text())
    assert m["n"] == 100 and m["fid"] > 0 and m["label_accuracy"] is None
    assert len(os.listdir(cache)) == 1


def usage_error(capsys, *args):
    """Runs `fastgan ARGS` in-process (faster than a subprocess); returns its stderr."""
    capsys.readouterr()
    assert cli_main([str(a) for a in args]) == 2
    return capsys.readouterr().err


def test_eval_cli_bad_inputs(runs, tmp_path, capsys):
    ckpt = runs / "mlp" / "checkpoint.pt"
    # one through the real command: exit code 2, one line, no traceback
    assert_usage_error(fastgan("eval", "--checkpoint", tmp_path / "missing.pt"), "does not exist")
    for n in (1, 0, -3):
        err = usage_error(capsys, "eval", "--checkpoint", ckpt, "--n", n)
        assert "--n must be an integer of at least 2" in err, err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "cannot read checkpoint" in usage_error(capsys, "eval", "--checkpoint", text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert "not a fastgan checkpoint" in usage_error(capsys, "eval", "--checkpoint", other)
    # the right file format with the wrong model in it
    state = torch.load(ckpt, weights_only=True)
    state["config"]["model"] = "dcgan"
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    assert "the dcgan generator weights do not fit this model" in usage_error(capsys, "eval", "--checkpoint", wrong)
    assert "device" in usage_error(capsys, "eval", "--checkpoint", ckpt, "--device", "tpu")


def test_train_eval_every(tiny, tmp_path):
    """--eval-every: evaluations at every K steps and at the end, kept in the checkpoint (and on
    resume), written to history.csv and the plot; the last one is what `fastgan eval` measures on
    the final checkpoint with the same n and noise seed."""
    from fastgan.train import TrainConfig, Trainer
    from fastgan.train.images import EVAL_COLUMNS

    cfg = TrainConfig(
        model="mlp",
        g_widths=(16, 32),
        d_widths=(32, 16),
        batch_size=32,
        steps=7,
        eval_every=3,
        eval_n=64,
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF)
    log = open(os.devnull, "w")
    trainer = Trainer(cfg, log=log, evaluator=evaluator)
    trainer.fit()
    assert [e["step"] for e in trainer.evals] == [3, 6, 7]
    seconds = [e["train_seconds"] for e in trainer.evals]
    assert 0 < seconds[0] < seconds[1] < seconds[2] <= trainer.train_seconds
    for e in trainer.evals:
        assert e["fid"] > 0 and 1.0 <= e["inception_score"] <= 10.0 + 1e-9 and e["label_accuracy"] is None

    import csv

    with open(tmp_path / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and all(c in rows[0] for c in EVAL_COLUMNS)
    assert [int(r["step"]) for r in rows if r["fid"]] == [3, 6, 7]
    assert float(rows[6]["fid"]) == pytest.approx(trainer.evals[-1]["fid"], rel=1e-5)
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0

    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    m = metrics.evaluate(ckpt, n=64, cache_dir=tiny[2], classifier=TINY_CLF)
    assert m["fid"] == pytest.approx(trainer.evals[-1]["fid"], rel=1e-6)

    # resume to step 9: the earlier evaluations stay, one more at the end
    more = TrainConfig(**{**cfg.to_dict(), "steps": 9, "g_widths": (16, 32), "d_widths": (32, 16)})
    resumed = Trainer(more, resume=True, explicit={"steps"}, log=log, evaluator=evaluator)
    assert [e["step"] for e in resumed.evals] == [3, 6, 7]
    assert resumed.train_seconds == pytest.approx(trainer.train_seconds)
    resumed.fit()
    assert [e["step"] for e in resumed.evals] == [3, 6, 7, 9]
    assert resumed.evals[-1]["train_seconds"] > trainer.train_seconds


def test_train_eval_options_are_checked(capsys):
    err = usage_error(capsys, "train", *TINY, "--steps", 2, "--eval-every", -1)
    assert "--eval-every must be an integer >= 0" in err, err
    err = usage_error(capsys, "train", *TINY, "--steps", 2, "--eval-every", 1, "--eval-n", 1)
    assert "--eval-n must be an integer of at least 2" in err, err


def test_bench_quality_runs_both_recipes(tiny, tmp_path):
    """fastgan bench quality: every (seed, recipe) is measured at each --eval-every step and at
    the end, with growing training time, and the table has a row per step."""
    from fastgan.bench import quality

    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF)
    result = quality.run("cpu", models=("mlp",), seeds=(0, 1), steps=5, eval_every=3, eval_n=40, evaluator=evaluator)
    assert [(r["impl"], r["seed"]) for r in result["runs"]] == [
        ("tutorial", 0),
        ("fastgan", 0),
        ("tutorial", 1),
        ("fastgan", 1),
    ]
    for r in result["runs"]:
        assert [e["step"] for e in r["evals"]] == [3, 5]
        assert 0 < r["evals"][0]["train_seconds"] < r["evals"][1]["train_seconds"]
        assert all(e["fid"] > 0 for e in r["evals"])
    table = quality.markdown(result)
    assert "| mlp | 3 |" in table and "| mlp | 5 |" in table and "speed-up" in table
    quality.plot(result, str(tmp_path / "q.png"))
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_quality_recipes_train_beside_the_default_from_the_same_start(tiny):
    """Each recipe trains through fastgan's Trainer with its options, from the default's
    initial weights, data order and noise: an --ema that starts after the last step samples G
    itself, so its FIDs are the default's exactly; another loss gives other ones."""
    from fastgan.bench import quality

    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF)
    recipes = [quality.parse_recipe("--ema 0.5 --ema-start 100"), quality.parse_recipe("--loss hinge")]
    result = quality.run("cpu", ("mlp",), (0,), 4, 2, 40, impls=("fastgan",), evaluator=evaluator, recipes=recipes)
    by = {r["recipe"]: r for r in result["runs"]}
    assert list(by) == ["default", "--ema 0.5 --ema-start 100", "--loss hinge"]
    assert by["--loss hinge"]["options"] == {"loss": "hinge"}
    fids = {name: [e["fid"] for e in r["evals"]] for name, r in by.items()}
    assert fids["--ema 0.5 --ema-start 100"] == fids["default"]
    assert fids["--loss hinge"] != fids["default"]
    table = quality.markdown(result)
    assert "| mlp | default (fastgan) | 4 |" in table and "| mlp | --loss hinge | 2 |" in table, table


def test_python_m_fastgan_metrics_prints_the_accuracy(tiny, monkeypatch, capsys):
    from fastgan.metrics import __main__ as entry

    monkeypatch.setattr(entry, "get_classifier", lambda *a: metrics.get_classifier(*a, settings=TINY_CLF))
    assert entry.main(["--dataset", "mnist-5k", "--cache-dir", str(tiny[2])]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mnist-5k: test accuracy {tiny[1]['test_accuracy']:.2%} (cached;"), out


def test_python_m_fastgan_metrics_bad_inputs(tmp_path, capsys):
    from fastgan.metrics import __main__ as entry

    (tmp_path / "afile").write_text("")
    for args, words in (
        (["--dataset", "mnist", "--data-dir", str(tmp_path / "nope")], "does not exist"),
        (["--data-dir", str(tmp_path)], "mnist-5k is embedded"),
        (["--cache-dir", str(tmp_path / "afile")], "is a file, not a folder"),
    ):
        try:
            rc = entry.main(args)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
        assert rc == 2, args
        assert words in capsys.readouterr().err


def test_fid_of_non_finite_features_is_nan_not_zero_or_an_error():
    f = torch.randn(50, 8, dtype=torch.float64)
    bad = f.clone()
    bad[3, 2] = float("nan")
    assert math.isnan(metrics.fid_from_features(bad, f))
    mu, cov = metrics.feature_stats(f)
    assert math.isnan(metrics.frechet_distance(mu * float("inf"), cov, mu, cov))  # max(0, nan) was 0.0


def test_a_diverged_generator_is_measured_not_fatal(runs, tiny):
    """A G with NaN weights (lr too high): the evaluation reports nan and how many images were
    not finite, and --eval-every carries on (linalg.eigh raised before)."""
    G, cfg, _ = metrics.load_generator(str(runs / "mlp" / "checkpoint.pt"), "cpu")
    with torch.no_grad():
        next(G.parameters()).fill_(float("nan"))
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF)
    m = evaluator(G, cfg, 40)
    assert math.isnan(m["fid"]) and m["nonfinite_images"] == 40
    healthy = metrics.load_generator(str(runs / "mlp" / "checkpoint.pt"), "cpu")[0]
    assert evaluator(healthy, cfg, 40)["nonfinite_images"] == 0


def test_images_that_are_not_finite_are_left_out_of_the_class_scores(runs, tiny):
    """A NaN image is no digit 0: the histogram and its entropy count the finite images only
    (the non-finite ones are counted, and make the FID nan)."""
    G, cfg, _ = metrics.load_generator(str(runs / "mlp" / "checkpoint.pt"), "cpu")

    class HalfNaN(torch.nn.Module):  # every other image diverged
        def forward(self, z, labels=None):
            x = G(z, labels).clone()
            x[::2] = float("nan")
            return x

    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF)
    m = evaluator(HalfNaN(), cfg, 40)
    healthy = evaluator(G, cfg, 40)
    assert m["nonfinite_images"] == 20 and sum(m["class_histogram"]) == 20 and math.isnan(m["fid"])
    assert 0 <= m["class_entropy"] <= math.log2(10) and 1 <= m["inception_score"] <= 10
    assert sum(healthy["class_histogram"]) == 40
    with torch.no_grad():
        next(G.parameters()).fill_(float("nan"))
    m = evaluator(G, cfg, 40)  # nothing finite: no scores, not a histogram of zeros' entropy
    assert m["class_histogram"] == [0] * 10 and math.isnan(m["class_entropy"]) and math.isnan(m["inception_score"])


def test_a_cache_folder_that_cannot_be_written_warns_and_goes_on(data, tmp_path, monkeypatch):
    def refuse(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:747] . open file failed")

    monkeypatch.setattr(clf, "atomic_torch_save", refuse)
    with pytest.warns(UserWarning, match="could not cache the classifier"):
        model, info = metrics.get_classifier("mnist-5k", cache=tmp_path, settings=TINY_CLF, data=data)
    assert info["path"] is None and not info["cached"] and info["test_accuracy"] > 0.5


def test_classifier_settings_from_a_list_are_the_same_settings(tiny, data):
    as_list = dict(dataclasses.asdict(TINY_CLF), channels=list(TINY_CLF.channels))
    _, info = metrics.get_classifier("mnist-5k", cache=tiny[2], settings=as_list, data=data)
    assert info["cached"] and info["path"] == tiny[1]["path"]


def test_fid_real_uses_as_many_real_images_as_it_is_compared_with(tiny, monkeypatch):
    import importlib

    ev = importlib.import_module("fastgan.metrics.evaluate")
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tiny[2], classifier=TINY_CLF)
    seen = []
    real = ev.classify
    monkeypatch.setattr(ev, "classify", lambda model, x, bs: seen.append(len(x)) or real(model, x, bs))
    for n, want in ((100, 100), (2000, 2000), (10**6, 4000)):  # mnist-5k: 4,000 training images
        evaluator.fid_real(n)
        assert seen.pop() == want


def test_a_run_on_files_is_evaluated_from_another_folder(tmp_path, tiny, monkeypatch):
    """The checkpoint keeps the data folder as an absolute path, so `fastgan eval` finds a relative
    --data-dir (or --download's default ./data) from anywhere."""
    import numpy as np

    from fastgan.data import write_idx

    rng = np.random.default_rng(0)
    raw = tmp_path / "work" / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 64), ("t10k", 32)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    monkeypatch.chdir(tmp_path / "work")
    # --download with the files already there (nothing is fetched) and no --data-dir: ./data
    args = [
        "train",
        *[a if a != "32" else "16" for a in TINY],
        "--dataset",
        "mnist",
        "--download",
        "--steps",
        "2",
        "--out",
        "run",
    ]
    assert cli_main(args) == 0
    ckpt = torch.load("run/checkpoint.pt", weights_only=True)
    assert ckpt["config"]["data_dir"] == str(tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path)
    m = metrics.evaluate(str(tmp_path / "work" / "run" / "checkpoint.pt"), n=20, cache_dir=tiny[2], classifier=TINY_CLF)
    assert m["dataset"] == "mnist" and m["n"] == 20
