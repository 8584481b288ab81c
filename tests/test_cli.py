"""The `fastgan` command through subprocess: train, sample, info, Ctrl-C, and every bad input
(exit code 2, a message naming the problem, no traceback)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model", "mlp", "--g-widths", "16,32", "--d-widths", "32,16", "--batch-size", "32", "--no-progress"]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def fastgan(*args, cwd=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "fastgan.cli", *map(str, args)],
        cwd=cwd or ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_usage_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished run: 10 steps of a narrow mlp on mnist-5k."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = fastgan("train", *TINY, "--steps", 10, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_train(run):
    out, result = run
    assert "mlp on mnist-5k (5000 images), 10 steps of 32" in result.stdout
    assert "epoch 1/1  step 10/10" in result.stdout and "img/s" in result.stdout
    for name in ("checkpoint.pt", "samples.png", "losses.png", "history.csv", "train.log", "config.json"):
        assert (out / name).is_file(), name
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "history.csv").read_text().splitlines()) == 11


def test_resume_and_sample(run, tmp_path):
    out, _ = run
    result = fastgan("train", "--out", out, "--resume", "--steps", 12, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "step 12/12" in result.stdout
    grid = tmp_path / "grid.png"
    result = fastgan("sample", "--checkpoint", out / "checkpoint.pt", "--n", 16, "--out", grid)
    assert result.returncode == 0, result.stderr
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_info():
    result = fastgan("info")
    assert result.returncode == 0, result.stderr
    for key in ("version", "torch_version", "cpu_kernels", "cuda_kernels", "num_threads"):
        assert key in result.stdout


def test_bench_train_prints_a_table_and_json(tmp_path):
    out, md = tmp_path / "train.json", tmp_path / "train.md"
    result = fastgan(
        "bench",
        "train",
        "--device",
        "cpu",
        "--model",
        "mlp",
        "--batch-size",
        8,
        "--impl",
        "tutorial",
        "--impl",
        "fastgan",
        "--json",
        out,
        "--markdown",
        md,
    )
    assert result.returncode == 0, result.stderr
    assert "| mlp | 8 |" in result.stdout and "fastgan vs tutorial" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["tutorial"] > 0 and rows[0]["fastgan"] > 0
    assert md.read_text().strip() == result.stdout.strip()  # the printed table, written whole
    # the table again from the JSON alone, without timing anything
    again = fastgan("bench", "train", "--from-json", out)
    assert again.returncode == 0 and again.stdout.strip() == result.stdout.strip()


def test_bench_train_bf16_runs_fastgan_under_autocast():
    from fastgan.bench.train import markdown, run

    result = run("cpu", models=("mlp",), batch_sizes=(8,), impls=("fastgan",), precision="bf16")
    assert result["precision"] == "bf16" and result["rows"][0]["fastgan"] > 0
    assert "bf16 autocast for expert, fastgan and graph (tutorial: fp32)" in markdown(result)


def test_bench_train_channels_last(tmp_path):
    out = tmp_path / "train.json"
    result = fastgan(
        "bench",
        "train",
        "--device",
        "cpu",
        "--model",
        "dcgan",
        "--batch-size",
        8,
        "--impl",
        "fastgan",
        "--channels-last",
        "--json",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "channels_last weights for expert, fastgan and graph (tutorial: NCHW)" in result.stdout
    data = json.loads(out.read_text())
    assert data["channels_last"] is True and data["rows"][0]["fastgan"] > 0


def test_bench_train_rejects_an_unknown_blas_library():
    from fastgan.bench.train import run

    with pytest.raises(ValueError, match="blas must be one of default, cublas, cublaslt"):
        run("cpu", models=("mlp",), batch_sizes=(8,), impls=("fastgan",), blas="mkl")
    result = fastgan("bench", "train", "--device", "cpu", "--blas", "mkl")
    assert result.returncode == 2 and "--blas: invalid choice" in result.stderr


def test_bench_gemm_records_and_times_every_matrix_product_of_a_step():
    from fastgan.bench.gemm import markdown, run

    result = run("cpu", models=("mlp",), batch_size=8)
    rows = result["rows"]
    # G forward 4, D forward on real+fake 4, D backward 7 (no grad for the input), D forward
    # in the G step 4, D backward there 4 (input grads only), G backward 7
    assert sum(r["count"] for r in rows) == 30
    assert all(r["default"] > 0 for r in rows)
    assert {r["op"] for r in rows} == {"mm", "addmm"} and sum(r["bias"] for r in rows) == 3
    assert "8x100 @ 100x256^T" in {r["shapes"] for r in rows}  # G's first layer: x @ W.t()
    assert all(("default as mm" in r) == r["bias"] for r in rows)  # each addmm also timed as mm
    assert all(r["default as mm"] > 0 for r in rows if r["bias"])
    assert "mlp: 30 products per step" in markdown(result)


def test_bench_train_epoch_times_both_loops():
    result = fastgan("bench", "train", "--device", "cpu", "--epoch", "--epoch-size", 256, "--model", "mlp")
    assert result.returncode == 0, result.stderr
    assert "synthetic uint8, 256 images" in result.stdout and "| mlp |" in result.stdout


def test_conditional_sample_label(tmp_path):
    out = tmp_path / "c"
    result = fastgan(
        "train",
        "--model",
        "cgan",
        "--g-widths",
        "16,32",
        "--d-widths",
        "32,16",
        "--steps",
        3,
        "--batch-size",
        16,
        "--no-progress",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    result = fastgan(
        "sample", "--checkpoint", out / "checkpoint.pt", "--n", 8, "--label", 7, "--out", tmp_path / "sevens.png"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sevens.png").is_file()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--model", "wgan"], ["invalid choice: 'wgan'"]),
        (["--dataset", "cifar10"], ["invalid choice: 'cifar10'"]),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/fastgan"], ["/nonexistent/fastgan", "does not exist"]),
        (["--dataset", "fashion-mnist"], ["needs a data directory"]),
        (["--batch-size", "6000"], ["batch size 6000 is larger than the dataset (5000 images)"]),
        (["--epochs", "0"], ["--epochs", "positive integer"]),
        (["--steps", "-5"], ["--steps", "positive integer"]),
        (["--epochs", "2", "--steps", "3"], ["not allowed with argument"]),
        (["--lr", "-1"], ["--lr must be a positive number"]),
        (["--dropout", "1.5"], ["--dropout must be in [0, 1)"]),
        (["--seed", "99999999999999999999"], ["--seed", "must be from 0 to"]),
        (["--model", "mlp-bn", "--batch-size", "1"], ["--batch-size must be at least 2 for mlp-bn"]),
        (["--data-dir", "/tmp"], ["--data-dir /tmp: mnist-5k is embedded"]),
        (["--optimizer", "rmsprop", "--lr", "1e-3"], ["--lr is Adam's learning rate", "--lr-d and --lr-g"]),
    ],
)
def test_train_bad_input(args, fragments, tmp_path):
    assert_usage_error(fastgan("train", *args, "--out", tmp_path / "x", "--no-progress"), *fragments)


def test_output_paths_are_checked_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out in (afile, afile / "sub"):
        assert_usage_error(fastgan("train", *TINY, "--steps", 1, "--out", out), "--out", "is a file, not a folder")
    assert_usage_error(fastgan("train", *TINY, "--steps", 1, "--out", ""), "--out is empty")
    assert_usage_error(fastgan("sample", "--checkpoint", "x.pt", "--out", tmp_path / "g.jpg"), "--out", ".png")
    (tmp_path / "grid.png").mkdir()
    assert_usage_error(
        fastgan("sample", "--checkpoint", "x.pt", "--out", tmp_path / "grid.png"), "--out", "is a folder"
    )
    assert_usage_error(fastgan("eval", "--checkpoint", "x.pt", "--json", tmp_path), "--json", "is a folder")
    assert_usage_error(
        fastgan("eval", "--checkpoint", "x.pt", "--cache-dir", afile), "--cache-dir", "is a file, not a folder"
    )
    assert afile.read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["afile", "grid.png"]


def test_on_off_options_a_resumed_run_may_change_have_both_forms():
    # a run started with --channels-last (or --no-cuda-graph...) can be resumed without it
    from fastgan.cli import build_parser

    parse = build_parser().parse_args
    for name in ("cuda_graph", "compile", "channels_last", "tensorboard", "progress"):
        flag = "--" + name.replace("_", "-")
        assert getattr(parse(["train", flag]), name) is True
        assert getattr(parse(["train", "--no-" + flag[2:]]), name) is False
        assert not hasattr(parse(["train"]), name)  # not given: the checkpoint's value on --resume


def test_bench_without_a_benchmark_names_it():
    assert_usage_error(fastgan("bench"), "choose a benchmark: ops, train or quality")


def test_train_data_dir_without_files(tmp_path):
    assert_usage_error(fastgan("train", "--dataset", "mnist", "--data-dir", tmp_path), "no MNIST files", str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message without a GPU")
def test_train_cuda_without_gpu(tmp_path):
    assert_usage_error(fastgan("train", "--device", "cuda", "--out", tmp_path), "CUDA is not available")


def _has_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_tensorboard(), reason="tests the message without tensorboard")
def test_tensorboard_missing(tmp_path):
    assert_usage_error(
        fastgan("train", *TINY, "--steps", 1, "--tensorboard", "--out", tmp_path),
        "--tensorboard needs the tensorboard package",
        "pip install",
    )


def test_resume_bad_input(run, tmp_path):
    out, _ = run
    assert_usage_error(fastgan("train", "--model", "dcgan", "--out", out, "--resume"), "from model 'mlp', not 'dcgan'")
    assert_usage_error(fastgan("train", "--out", tmp_path / "empty", "--resume"), "no checkpoint")


def test_sample_bad_input(run, tmp_path):
    out, _ = run
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    assert_usage_error(fastgan("sample", "--checkpoint", junk), "cannot read checkpoint", str(junk))
    assert_usage_error(fastgan("sample", "--checkpoint", tmp_path / "missing.pt"), "does not exist")
    assert_usage_error(
        fastgan("sample", "--checkpoint", out / "checkpoint.pt", "--label", 3, "--out", tmp_path / "g.png"),
        "--label needs a conditional model",
    )
    assert_usage_error(fastgan("sample", "--checkpoint", out / "checkpoint.pt", "--n", 0), "--n")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_keeps_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    # A test run started as a background job (`pytest &`) ignores SIGINT, and an ignored signal
    # stays ignored in children, where Python then installs no KeyboardInterrupt handler: give
    # the child the default disposition, as a user's foreground `fastgan train` has.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastgan.cli",
            "train",
            *TINY,
            "--steps",
            "1000000",
            "--checkpoint-every",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted at step" in stderr and f"fastgan train --out {out} --resume" in stderr
    from fastgan.train import load_checkpoint

    state = load_checkpoint(out / "checkpoint.pt")
    # a --checkpoint-every 5 checkpoint, or an epoch's (156 steps of 32 of the 5,000 images)
    assert state["step"] > 0 and (state["step"] % 5 == 0 or state["step"] % (5000 // 32) == 0)
    assert not [f for f in os.listdir(out) if ".tmp" in f]
