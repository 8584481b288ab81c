"""Bad input to the benchmark tools (`fastgan bench ops|train|quality`, `python -m
fastgan.bench.gemm|profile|dispatch`): each is refused before anything is timed, with exit
status 2 and one line naming the option, never a traceback. No benchmark runs here: the
functions that would time anything are replaced by ones that fail the test."""

import json
import os
import subprocess
import sys

import pytest
import torch

import fastgan
from fastgan.bench import dispatch, epoch, gemm, ops, profile, quality, train

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastgan.__file__)))

TRAIN_RESULT = {
    "machine": "CPU test",
    "rows": [{"model": "mlp", "batch_size": 8, "tutorial": 2.0, "fastgan": 1.0}],
    "precision": "fp32",
    "channels_last": False,
    "blas": "default",
    "impls": ["tutorial", "fastgan"],
}
OPS_RESULT = {
    "machine": "CPU test",
    "copy_bandwidth_gbs": None,
    "graph": False,
    "impls": ["eager", "fastgan"],
    "rows": [
        {"op": "gan_d_loss", "shape": "64x1", "layout": "contiguous", "dtype": "float32", "eager": 0.2, "fastgan": 0.1}
    ],
}
EPOCH_RESULT = {
    "machine": "CPU test",
    "data": "synthetic",
    "rows": [
        {
            "model": "mlp",
            "tutorial_s": 2.0,
            "tutorial_steps": 4,
            "fastgan_s": 1.0,
            "fastgan_steps": 4,
            "fastgan_setup_s": 0.1,
        }
    ],
}
QUALITY_RESULT = {
    "machine": "CPU test",
    "dataset": "mnist-5k",
    "steps": 2,
    "eval_every": 1,
    "eval_n": 2,
    "seeds": [0],
    "fid_real": 1.0,
    "classifier_accuracy": 0.9,
    "runs": [{"model": "mlp", "impl": "fastgan", "seed": 0, "evals": [{"step": 2, "train_seconds": 1.0, "fid": 5.0}]}],
}
GEMM_RESULT = {
    "machine": "CPU test",
    "batch_size": 8,
    "precision": "fp32",
    "libraries": ["default"],
    "rows": [{"model": "mlp", "op": "mm", "count": 2, "shapes": "8x100 @ 100x256^T", "bias": False, "default": 3.0}],
}

MAINS = {"ops": ops.main, "train": train.main, "quality": quality.main, "gemm": gemm.main}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(autouse=True)
def no_benchmark_runs(monkeypatch):
    def ran(*args, **kwargs):
        raise AssertionError("a benchmark ran: the bad input was not refused before timing")

    for module in (ops, train, epoch, quality, gemm, dispatch):
        monkeypatch.setattr(module, "run", ran)
    for name in ("ops_per_step", "ops_by_shape", "kernels_per_step"):
        monkeypatch.setattr(profile, name, ran)


def usage_error(capsys, main, argv, *fragments):
    """main(argv) exits with status 2 and a usage message holding each fragment."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2, exc.value.code
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "fastgan", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# 1. --from-json: not JSON, truncated, missing, another benchmark's result


@pytest.mark.parametrize("what", ["ops", "train", "quality", "gemm"])
@pytest.mark.parametrize("content", ["not json at all", '{"machine": "x", "rows": [', None, "[1, 2]"])
def test_from_json_that_is_not_a_result_file(capsys, tmp_path, what, content):
    path = tmp_path / "r.json"
    if content is not None:
        write(path, content)
    usage_error(capsys, MAINS[what], ["--from-json", path], f"--from-json {path}")


@pytest.mark.parametrize(
    "what, other",
    [
        ("ops", TRAIN_RESULT),
        ("train", OPS_RESULT),
        ("train", EPOCH_RESULT),
        ("quality", TRAIN_RESULT),
        ("gemm", OPS_RESULT),
    ],
)
def test_from_json_of_another_benchmark(capsys, tmp_path, what, other):
    path = write(tmp_path / "other.json", other)
    usage_error(capsys, MAINS[what], ["--from-json", path], f"--from-json {path}: not a `", "result")


def test_from_json_of_another_benchmark_through_the_cli(tmp_path):
    path = write(tmp_path / "train.json", TRAIN_RESULT)
    result = cli("bench", "ops", "--from-json", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--from-json" in result.stderr and "fastgan bench ops" in result.stderr, result.stderr
    epoch_json = write(tmp_path / "epoch.json", EPOCH_RESULT)
    result = cli("bench", "train", "--epoch", "--from-json", path)
    assert result.returncode == 2 and "--from-json" in result.stderr and "Traceback" not in result.stderr
    assert cli("bench", "train", "--epoch", "--from-json", epoch_json).returncode == 0


@pytest.mark.parametrize(
    "what, good, extra",
    [
        ("ops", OPS_RESULT, []),
        ("train", TRAIN_RESULT, []),
        ("train", EPOCH_RESULT, ["--epoch"]),
        ("quality", QUALITY_RESULT, []),
        ("gemm", GEMM_RESULT, []),
    ],
)
def test_from_json_still_prints_its_own_results(capsys, tmp_path, what, good, extra):
    path, md = write(tmp_path / "good.json", good), tmp_path / "new" / "table.md"
    assert MAINS[what](["--from-json", str(path), "--markdown", str(md), *extra]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: CPU test") and md.read_text() == out


# 2. --device: not a device, or CUDA where there is none


@pytest.mark.parametrize("what", ["ops", "train", "quality", "gemm"])
def test_device_that_is_not_a_device(capsys, what):
    usage_error(capsys, MAINS[what], ["--device", "foo"], "--device foo: not a device")


def test_device_that_is_not_a_device_through_the_cli():
    result = cli("bench", "train", "--device", "foo", "--model", "mlp", "--batch-size", 8, "--impl", "fastgan")
    assert result.returncode == 2 and "--device foo" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@NO_CUDA
@pytest.mark.parametrize("what", ["ops", "train", "quality", "gemm"])
def test_device_cuda_without_a_gpu(capsys, what):
    usage_error(capsys, MAINS[what], ["--device", "cuda"], "--device cuda: no CUDA GPU is available")


def test_dispatch_and_profile_check_the_device(capsys):
    usage_error(capsys, dispatch.main, ["foo"], "device foo: not a device")
    usage_error(capsys, profile.main, ["--ops", "--device", "foo"], "--device foo: not a device")
    usage_error(capsys, profile.main, ["--device", "cpu"], "--device cpu")
    usage_error(capsys, profile.main, ["--loss", "hinge"], "--loss: only with --ops")
    usage_error(capsys, profile.main, ["--ops", "--device", "cpu", "--r1-every", "2"], "--r1-every needs --r1")


@NO_CUDA
def test_profile_without_a_gpu(capsys):
    usage_error(capsys, profile.main, ["--ops"], "--device cuda: no CUDA GPU is available")
    usage_error(capsys, profile.main, [], "no CUDA GPU")


# 3. counts must be positive integers


@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", "--batch-size", 0], "--batch-size"),
        (["train", "--batch-size", -8], "--batch-size"),
        (["train", "--batch-size", "x"], "--batch-size"),
        (["train", "--epoch", "--epoch-size", 0], "--epoch-size"),
        (["train", "--epoch", "--epoch-size", 10], "--epoch-size"),
        (["gemm", "--batch-size", 0], "--batch-size"),
        (["quality", "--steps", 0], "--steps"),
        (["quality", "--eval-every", -1], "--eval-every"),
        (["quality", "--eval-n", 1], "--eval-n"),
        (["quality", "--seeds", -1], "--seeds"),
        (["quality", "--seeds", 1, 1], "--seeds"),
        (["profile", "--ops", "--device", "cpu", "--batch-size", 0], "--batch-size"),
        (["profile", "--ops", "--device", "cpu", "--top", 0], "--top"),
    ],
)
def test_counts_must_be_positive(capsys, argv, option):
    main = profile.main if argv[0] == "profile" else MAINS[argv[0]]
    usage_error(capsys, main, ["--device", "cpu", *argv[1:]] if argv[0] != "profile" else argv[1:], option)


def test_batch_size_zero_through_the_cli():
    result = cli("bench", "train", "--device", "cpu", "--model", "mlp", "--batch-size", 0, "--impl", "fastgan")
    assert result.returncode == 2 and "--batch-size" in result.stderr, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "failed" not in result.stdout


# 4. CUDA-only implementations and options on the CPU


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--impl", "graph"], "--impl graph: needs a CUDA device"),
        (["--impl", "fastgan", "--impl", "expert"], "--impl expert: needs a CUDA device"),
        (["--impl", "fastgan", "--blas", "cublaslt"], "--blas cublaslt"),
    ],
)
def test_train_cuda_only_on_cpu(capsys, argv, fragment):
    usage_error(capsys, train.main, ["--device", "cpu", "--model", "mlp", "--batch-size", 8, *argv], fragment)


def test_ops_graph_on_cpu(capsys):
    usage_error(capsys, ops.main, ["--device", "cpu", "--graph"], "--graph")


# options that only apply to one mode of `bench train`


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--data-dir", "."], "--data-dir"),
        (["--epoch-size", 256], "--epoch-size"),
        (["--epoch", "--batch-size", 8], "--batch-size"),
        (["--epoch", "--impl", "graph"], "--impl"),
        (["--epoch", "--data-dir", "/no/such/folder"], "--data-dir"),
    ],
)
def test_train_options_of_the_other_mode(capsys, argv, option):
    usage_error(capsys, train.main, ["--device", "cpu", *argv], option)


def test_quality_dataset_and_data_dir(capsys):
    usage_error(capsys, quality.main, ["--device", "cpu", "--dataset", "cifar"], "--dataset")
    usage_error(capsys, quality.main, ["--device", "cpu", "--dataset", "mnist"], "--dataset mnist: needs --data-dir")
    usage_error(
        capsys,
        quality.main,
        ["--device", "cpu", "--dataset", "mnist", "--data-dir", "/no/such/folder"],
        "--data-dir /no/such/folder",
    )


# 5. output paths: checked (and their folder made) before anything runs


@pytest.mark.parametrize("what", ["ops", "train", "quality", "gemm"])
@pytest.mark.parametrize("option", ["--json", "--markdown"])
def test_output_path_that_is_a_folder(capsys, tmp_path, what, option):
    usage_error(
        capsys, MAINS[what], ["--device", "cpu", option, tmp_path], f"{option} {tmp_path} is a folder, not a file"
    )


@pytest.mark.parametrize("what", ["ops", "train", "quality", "gemm"])
def test_output_path_under_a_file(capsys, tmp_path, what):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "out.json"
    usage_error(
        capsys,
        MAINS[what],
        ["--device", "cpu", "--json", bad],
        f"--json {bad}: {tmp_path / 'file'} is a file, not a folder",
    )


def test_quality_recipes_are_checked_naming_the_one_at_fault(capsys):
    usage_error(
        capsys, quality.main, ["--device", "cpu", "--recipe=--loss nope"], "--recipe '--loss nope'", "invalid choice"
    )
    usage_error(capsys, quality.main, ["--device", "cpu", "--ema", "1.5"], "the options given: --ema must be a decay")
    usage_error(
        capsys,
        quality.main,
        ["--device", "cpu", "--loss", "hinge", "--recipe=--loss hinge"],
        "the recipe '--loss hinge' is given twice",
    )


def test_quality_plot_path(capsys, tmp_path):
    usage_error(
        capsys, quality.main, ["--device", "cpu", "--plot", tmp_path], f"--plot {tmp_path} is a folder, not a file"
    )


def test_an_output_in_a_missing_folder_passes_the_check(capsys, tmp_path):
    # atomic_write makes the folder when the result is written
    out = tmp_path / "a" / "b" / "r.json"
    with pytest.raises(AssertionError, match="a benchmark ran"):  # the check passed: it would run now
        train.main(["--device", "cpu", "--model", "mlp", "--batch-size", "8", "--impl", "fastgan", "--json", str(out)])
    assert not out.exists()


def test_json_and_markdown_the_same_file(capsys, tmp_path):
    f = tmp_path / "r.txt"
    usage_error(capsys, ops.main, ["--device", "cpu", "--json", f, "--markdown", f], "--markdown", "--json")
