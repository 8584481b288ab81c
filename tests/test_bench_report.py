"""The numbers `fastgan bench` publishes, from hand-made results: every speed-up ratio, images per
second, % of copy bandwidth, the 50-epoch extrapolation, mean +- sample sd over seeds, the gemm
totals; each run's JSON reprinted by --from-json as it was printed; the options reaching run().
Nothing is timed here: the timing functions are replaced."""

import collections
import inspect
import json
import re

import pytest
import torch

from fastgan.bench import epoch, gemm, ops, profile, quality, timing, train


def _row(table, prefix):
    rows = [line for line in table.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, (prefix, table)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_train_table_ratios_and_images_per_second():
    result = {
        "machine": "m",
        "impls": list(train.IMPLS),
        "precision": "fp32",
        "blas": "default",
        "channels_last": False,
        "rows": [
            {
                "model": "mlp",
                "batch_size": 256,
                "tutorial": 4.0,
                "compile": 3.0,
                "expert": 2.0,
                "fastgan": 1.0,
                "graph": 0.5,
            }
        ],
    }
    table = train.markdown(result)
    head = _row(table, "| model")
    assert head[-4:] == ["graph img/s", "graph vs tutorial", "graph vs compile", "graph vs expert"]
    # 256 images / 0.5 ms = 512,000 img/s; speed-ups are other / graph
    assert _row(table, "| mlp")[-4:] == ["512,000", "8.0x", "6.0x", "4.0x"]
    # without graph (CPU): fastgan is the reference
    cpu = dict(
        result, impls=["tutorial", "fastgan"], rows=[{"model": "mlp", "batch_size": 8, "tutorial": 2.0, "fastgan": 0.5}]
    )
    assert _row(train.markdown(cpu), "| mlp")[-2:] == ["16,000", "4.0x"]


def test_ops_table_ratios_and_bandwidth_fraction():
    result = {
        "machine": "m",
        "copy_bandwidth_gbs": 3000.0,
        "graph": True,
        "impls": ["eager", "compile", "fastgan"],
        "rows": [
            {
                "op": "bias_leaky_relu",
                "shape": "8x4",
                "layout": "contiguous",
                "dtype": "float32",
                "eager": 0.3,
                "compile": 0.2,
                "fastgan": 0.1,
                "fastgan_bw_frac": 0.8,
            }
        ],
    }
    table = ops.markdown(result)
    assert "measured copy bandwidth 3000 GB/s" in table
    assert _row(table, "| bias_leaky_relu")[-3:] == ["3.00x", "2.00x", "80%"]


def test_ops_case_byte_counts_are_the_documented_minimums():
    """The % copy BW column divides these bytes by the time: pin them to the comments' counts."""
    expected = {
        "bias_leaky_relu": 5,
        "batch_norm": 8,
        "batch_norm+leaky_relu": 8,
        "gan_d_loss": 6,
        "gan_g_loss": 3,
        "bce_with_logits": 5,
    }
    for name, per_element in expected.items():
        case, shapes, _ = ops.CASES[name]
        shape, layout = shapes[0]
        _, nbytes = case(shape, layout, torch.float32, "cpu", "eager")
        assert nbytes == per_element * torch.Size(shape).numel() * 4, name


def test_ops_run_result_reads_back_with_from_json(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ops, "time_call", lambda *a, **k: 0.25)
    monkeypatch.setattr(ops, "auto_iters", lambda *a, **k: 1)
    result = ops.run("cpu", ["gan_g_loss"], ("float32",), ("eager", "fastgan"))
    path = tmp_path / "ops.json"
    timing.report(result, ops.markdown, json_path=str(path))
    printed = capsys.readouterr().out
    assert ops.main(["--from-json", str(path)]) == 0
    assert capsys.readouterr().out == printed


def test_train_run_result_reads_back_with_from_json(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train, "make", lambda *a, **k: lambda: None)
    monkeypatch.setattr(train, "time_call", lambda *a, **k: 2.0)
    monkeypatch.setattr(train, "auto_iters", lambda *a, **k: 1)
    result = train.run("cpu", ("mlp",), (8,), ("tutorial", "fastgan"))
    path = tmp_path / "train.json"
    timing.report(result, train.markdown, json_path=str(path))
    printed = capsys.readouterr().out
    assert train.main(["--from-json", str(path)]) == 0
    assert capsys.readouterr().out == printed
    assert json.loads(path.read_text())["rows"][0]["fastgan"] == 2.0


def test_epoch_table_speed_up_and_fifty_epochs_with_setup():
    result = {
        "machine": "m",
        "data": "synthetic",
        "rows": [
            {
                "model": "mlp",
                "tutorial_s": 100.0,
                "tutorial_steps": 9,
                "fastgan_s": 10.0,
                "fastgan_steps": 9,
                "fastgan_setup_s": 5.0,
            }
        ],
    }
    assert _row(epoch.markdown(result), "| mlp") == ["mlp", "100.00", "10.00", "10.0x", "5000 s", "505.0 s"]


def test_bench_train_epoch_defaults_to_the_mlp_only(monkeypatch, capsys):
    seen = {}

    def fake_run(device, models, data_dir, n):
        seen.update(models=models, n=n)
        return {"machine": "m", "data": "d", "rows": []}

    monkeypatch.setattr(epoch, "run", fake_run)
    assert train.main(["--device", "cpu", "--epoch"]) == 0
    assert seen == {"models": ("mlp",), "n": 60000}


def test_quality_table_mean_sample_sd_and_speed_up():
    runs = []
    for seed, fid in zip((0, 1, 2), (1.0, 2.0, 6.0)):  # mean 3, median 2, sample sd sqrt(7)
        runs.append(
            {
                "model": "mlp",
                "impl": "tutorial",
                "seed": seed,
                "evals": [{"step": 10, "train_seconds": 10.0 + seed, "fid": fid}],
            }
        )
        runs.append(
            {"model": "mlp", "impl": "fastgan", "seed": seed, "evals": [{"step": 10, "train_seconds": 2.0, "fid": 4.0}]}
        )
    result = {
        "machine": "m",
        "dataset": "mnist-5k",
        "eval_n": 2,
        "seeds": [0, 1, 2],
        "fid_real": 1.0,
        "classifier_accuracy": 0.9,
        "runs": runs,
    }
    # tutorial 11 s (mean of 10, 11, 12) over fastgan 2 s
    assert _row(quality.markdown(result), "| mlp") == ["mlp", "10", "3.0 ± 2.6", "4.0 ± 0.0", "11.0", "2.0", "5.5x"]


def test_quality_recipe_table_says_when_each_reaches_the_defaults_final_fid():
    def run(recipe, fids):
        return {
            "model": "dcgan",
            "impl": "fastgan",
            "recipe": recipe,
            "seed": 0,
            "evals": [{"step": 10 * (i + 1), "train_seconds": 5.0 * (i + 1), "fid": f} for i, f in enumerate(fids)],
        }

    result = {
        "machine": "m",
        "dataset": "mnist-5k",
        "eval_n": 2,
        "seeds": [0],
        "fid_real": 1.0,
        "classifier_accuracy": 0.9,
        "runs": [
            run("default", [50.0, 30.0, 20.0]),
            run("--ema 0.999", [40.0, 19.0, 15.0]),
            run("--loss lsgan", [60, 45]),
        ],
    }
    curves, ends = quality.markdown(result).split("reaches the default's final FID at")
    assert _row(curves, "| dcgan | --ema 0.999 | 20 |") == ["dcgan", "--ema 0.999", "20", "19.0 ± 0.0", "10.0"]
    # the default's final FID (20.0, step 30) is first reached by --ema at step 20; lsgan stops short
    assert _row(ends, "| dcgan | --ema 0.999 |") == [
        "dcgan",
        "--ema 0.999",
        "30",
        "15.0 ± 0.0",
        "15.0",
        "step 20, 10.0 s",
        "-5.0",
    ]
    assert _row(ends, "| dcgan | --loss lsgan |")[5:] == ["not within 20 steps", "–"]
    assert _row(ends, "| dcgan | default (fastgan) |")[5:] == ["step 30, 15.0 s", "+0.0"]


def test_recipe_names_and_bad_recipes():
    assert quality.recipe_name({}) == "default"
    assert quality.recipe_name({"ema": 0.999, "loss": "wgan", "gp": 10.0, "n_critic": 5}) == (
        "--loss wgan --gp 10 --n-critic 5 --ema 0.999"
    )
    assert quality.parse_recipe("--loss hinge --spectral-norm") == {"loss": "hinge", "spectral_norm": True}
    for text, message in (
        ("", "no options"),
        ("--loss nope", "--loss: invalid choice"),
        ("--epochs 3", "unrecognized arguments: --epochs 3"),
        ("--ema 2", "--ema must be a decay in [0, 1)"),
        ("--r1-every 4", "--r1-every needs --r1"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            quality.parse_recipe(text)


def test_bench_quality_options_reach_run(monkeypatch):
    seen, signature = {}, inspect.signature(quality.run)

    def fake_run(*args, **kwargs):
        seen.update(signature.bind(*args, **kwargs).arguments)
        return {
            "machine": "m",
            "dataset": "mnist-5k",
            "eval_n": 5,
            "seeds": [4],
            "fid_real": 1.0,
            "classifier_accuracy": 0.9,
            "runs": [],
        }

    monkeypatch.setattr(quality, "run", fake_run)
    assert (
        quality.main(
            [
                "--device",
                "cpu",
                "--model",
                "mlp",
                "--impl",
                "fastgan",
                "--seeds",
                "4",
                "0",
                "--steps",
                "7",
                "--eval-every",
                "3",
                "--eval-n",
                "5",
            ]
        )
        == 0
    )
    assert (seen["models"], seen["impls"], seen["seeds"], seen["steps"], seen["eval_every"], seen["eval_n"]) == (
        ("mlp",),
        ("fastgan",),
        [4, 0],
        7,
        3,
        5,
    )


def test_gemm_totals_count_each_product_per_step_and_are_microseconds(monkeypatch):
    result = {
        "machine": "m",
        "batch_size": 8,
        "precision": "fp32",
        "libraries": ["default"],
        "rows": [
            {"model": "mlp", "op": "mm", "count": 2, "shapes": "8x4 @ 4x4", "bias": False, "default": 3.0},
            {
                "model": "mlp",
                "op": "addmm",
                "count": 1,
                "shapes": "8x4 @ 4x4^T",
                "bias": True,
                "default": 4.0,
                "default as mm": 3.5,
            },
        ],
    }
    assert "mlp: 3 products per step; summed one by one: default 10 us" in gemm.markdown(result)
    monkeypatch.setattr(gemm, "time_product", lambda key, device: 0.002)  # 2 us in milliseconds
    rows = gemm.run("cpu", ("mlp",), batch_size=8)["rows"]
    assert all(r["default"] == pytest.approx(2.0) for r in rows)


def test_profile_ops_prints_the_total_op_count(monkeypatch, capsys):
    monkeypatch.setattr(profile, "ops_per_step", lambda *a: collections.Counter({"aten.mm": 3, "aten.add": 2}))
    assert profile.main(["--ops", "--device", "cpu", "--model", "mlp", "--batch-size", "8"]) == 0
    assert "fastgan mlp batch 8: 5 ops per step" in capsys.readouterr().out


def test_profile_ops_with_objective_options_counts_the_trainers_step(monkeypatch, capsys):
    seen = {}

    def fake(model, batch_size, device, **options):
        seen.update(options)
        return collections.Counter({"aten.mm": 7})

    monkeypatch.setattr(profile, "ops_per_trainer_step", fake)
    assert profile.main(["--ops", "--device", "cpu", "--loss", "wgan", "--gp", "10", "--n-critic", "5"]) == 0
    assert seen == {"loss": "wgan", "gp": 10.0, "n_critic": 5}
    assert "fastgan mlp batch 64: 7 ops per step" in capsys.readouterr().out
