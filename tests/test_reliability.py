"""Faults and hostile input (issue 22): one run per folder, no stale files, divergence and a full
disk handled, every checkpoint field checked before anything is written, clear messages.
Signal and concurrency tests spawn real processes, each bounded in time."""

import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastgan import cli
from fastgan.train import CheckpointError, ConfigError, TrainConfig, Trainer, load_checkpoint, save_checkpoint
from fastgan.train.config import DivergedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model", "mlp", "--g-widths", "16,32", "--d-widths", "32,16", "--batch-size", "32", "--no-progress"]


def small(out, **kw):
    base = dict(
        model="mlp",
        g_widths=(16, 32),
        d_widths=(32, 16),
        latent_dim=8,
        batch_size=256,
        out=str(out),
        progress=False,
        log_every=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def fastgan(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "fastgan.cli", *map(str, args)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_long_run(out, *extra):
    """A `fastgan train` that would run for hours, in its own process (default SIGINT/SIGTERM)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fastgan.cli", "train", *TINY, "--steps", "1000000", "--out", str(out), *extra],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(predicate, proc, seconds=120):
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert predicate(), proc.poll() is None or proc.communicate()


def one_line_error(result, code, *fragments):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


# -- 1. one run per folder ------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_run_blocks_nothing(tmp_path):
    out = tmp_path / "run"
    first = start_long_run(out, "--checkpoint-every", "5")
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists(), first)
        before = (out / "checkpoint.pt").read_bytes()
        second = fastgan("train", *TINY, "--steps", 3, "--out", out, "--resume")
        one_line_error(second, 2, f"--out {out} is in use by another fastgan train (PID {first.pid})")
        again = fastgan("train", *TINY, "--steps", 3, "--out", out, "--overwrite")
        one_line_error(again, 2, f"(PID {first.pid})")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert (out / "checkpoint.pt").read_bytes()[:1] == before[:1]  # the first run's file, still a checkpoint
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    resumed = fastgan("train", *TINY, "--steps", step + 2, "--out", out, "--resume")  # the OS dropped the lock
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == step + 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_the_folder_lock_names_its_holder_and_is_released_when_fit_ends(tmp_path):
    from fastgan.train.outputs import FolderLock

    held = FolderLock(str(tmp_path))
    held.acquire()
    with pytest.raises(ConfigError, match=rf"in use by another fastgan train \(PID {os.getpid()}\)"):
        FolderLock(str(tmp_path)).acquire()
    with pytest.raises(ConfigError, match="in use by another fastgan train"):
        Trainer(small(tmp_path, steps=2))  # refused before any work
    held.release()
    t = Trainer(small(tmp_path, steps=2))
    t.fit()
    FolderLock(str(tmp_path)).acquire()  # fit() let go of it


# -- 2. stale temporary files and SIGTERM ---------------------------------------------------


def test_temporary_files_of_dead_processes_are_removed_when_a_run_starts(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "samples").mkdir()
        stale = [tmp_path / f".checkpoint.pt.tmp{dead.pid}", tmp_path / "samples" / f".epoch_0001.png.tmp{dead.pid}"]
        live = tmp_path / f".checkpoint.pt.tmp{alive.pid}"
        for path in (*stale, live):
            path.write_bytes(b"x" * 1000)
        (tmp_path / "notes.tmp1").write_text("not ours")  # not a temp_path name: kept
        Trainer(small(tmp_path, steps=2), log=open(os.devnull, "w")).fit()
        assert not any(p.exists() for p in stale)
        assert live.exists() and (tmp_path / "notes.tmp1").exists()  # a writer that still runs keeps its file
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to a child process")
def test_sigterm_lands_the_write_in_flight_prints_the_resume_hint_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = start_long_run(out, "--checkpoint-every", "5")
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists(), proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "interrupted at step" in stderr and f"fastgan train --out {out} --resume" in stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] > 0
    assert not [f for f in os.listdir(out) if ".tmp" in f]


# -- 3. divergence --------------------------------------------------------------------------


def _poison_at(t, step):
    """t's step fills a G weight with NaN after `step` steps (the losses follow)."""
    real = t._step

    def step_fn():
        if t.step == step:
            with torch.no_grad():
                next(t.G.parameters()).fill_(math.nan)
        return real()

    t._step = step_fn


def test_non_finite_losses_stop_the_run_keeping_the_last_finite_checkpoint(tmp_path):
    t = Trainer(small(tmp_path, steps=40, checkpoint_every=5), log=open(os.devnull, "w"))
    _poison_at(t, 12)
    with pytest.raises(DivergedError, match=r"not finite from step 1[34] .*last checkpoint \(step 10\) is intact"):
        t.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["generator"].values())
    assert "training diverged" in (tmp_path / "train.log").read_text()


def test_no_stop_on_nan_warns_once_and_trains_on(tmp_path):
    t = Trainer(small(tmp_path, steps=20, stop_on_nan=False), log=open(os.devnull, "w"))
    _poison_at(t, 4)
    t.fit()
    assert t.step == 20
    text = (tmp_path / "train.log").read_text()
    assert text.count("warning: the losses are not finite from step 5") == 1


def test_a_huge_learning_rate_exits_1_with_one_line(tmp_path):
    result = fastgan("train", *TINY, "--steps", 30, "--lr", "1e300", "--out", tmp_path / "r")
    one_line_error(result, 1, "training diverged: the losses are not finite from step", "--no-stop-on-nan")


# -- 4. resuming on other data ----------------------------------------------------------------


def test_resume_on_other_data_is_refused_unless_allowed(tmp_path):
    Trainer(small(tmp_path, steps=2)).fit()
    path = tmp_path / "checkpoint.pt"
    state = load_checkpoint(path)
    assert state["data_sha256"] == Trainer(small(tmp_path, steps=3), resume=True).data_sha256
    state = dict(state, config=state["config"].to_dict(), data_sha256="0" * 64)  # as if trained on other files
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="is not what .* was trained on .*--allow-changed-data"):
        Trainer(small(tmp_path, steps=3), resume=True, explicit={"steps"})
    t = Trainer(small(tmp_path, steps=3), resume=True, explicit={"steps"}, allow_changed_data=True)
    t.fit()
    assert t.step == 3
    result = fastgan("train", "--out", tmp_path, "--resume", "--steps", 4)
    assert result.returncode == 0, result.stderr  # the checkpoint now holds this data's hash


# -- 5. a full disk ----------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_naming_the_path_and_the_old_checkpoint_survives(tmp_path, monkeypatch, capsys):
    import fastgan._files as files

    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--steps", "3", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    real = files.temp_path

    def full(path):  # the checkpoint's temporary file lies on a full disk
        if os.path.basename(path) == "checkpoint.pt":
            link = real(path)
            os.symlink("/dev/full", link)
            return link
        return real(path)

    monkeypatch.setattr(files, "temp_path", full)
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "6"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert errors == [f"fastgan train: error: {out / 'checkpoint.pt'} No space left on device"], err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_any_write_error_names_the_users_path_not_the_temporary(tmp_path):
    from fastgan._files import atomic_write

    target = tmp_path / "h.csv"
    with pytest.raises(OSError) as info:
        with atomic_write(target, "w") as f:
            raise OSError(28, "No space left on device", f.name)
    assert info.value.filename == str(target) and info.value.errno == 28
    assert not os.listdir(tmp_path)


# -- 6. sizes that cannot fit ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option", [["--latent-dim", "100000000"], ["--d-widths", "100000000"], ["--g-widths", "100000000,100000000"]]
)
def test_models_that_cannot_fit_are_refused_before_allocating(tmp_path, option):
    result = fastgan("train", "--model", "mlp", *option, "--out", tmp_path / "r", "--device", "cpu")
    one_line_error(result, 2, "parameters", "GiB", option[0])
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "run"
    Trainer(small(out, steps=3)).fit()
    return out


def test_sample_of_a_grid_that_cannot_fit_is_refused(finished, tmp_path):
    result = fastgan("sample", "--checkpoint", finished / "checkpoint.pt", "--n", 10**10, "--out", tmp_path / "g.png")
    one_line_error(result, 2, "--n 10000000000", "GiB")
    assert not (tmp_path / "g.png").exists()


def _crafted(finished, tmp_path, change):
    state = load_checkpoint(finished / "checkpoint.pt")
    state = dict(state, config=state["config"].to_dict())
    change(state)
    out = tmp_path / "crafted"
    out.mkdir(exist_ok=True)
    save_checkpoint(state, out / "checkpoint.pt")
    return out


def test_a_checkpoint_whose_models_cannot_fit_or_whose_step_no_history_reaches(finished, tmp_path):
    out = _crafted(finished, tmp_path, lambda s: s["config"].update(latent_dim=10**9))
    result = fastgan("sample", "--checkpoint", out / "checkpoint.pt", "--out", tmp_path / "g.png")
    one_line_error(result, 2, "its config cannot be built here", "GiB")
    out = _crafted(finished, tmp_path, lambda s: s.update(step=10**12))
    result = fastgan("train", "--out", out, "--resume", "--steps", 10**12 + 1)
    one_line_error(result, 2, "bad history in checkpoint: 3 losses for step 1000000000000")


# -- 7. crafted checkpoints ------------------------------------------------------------------


def _set_opt_state(state, key, value):
    first = next(iter(state["opt_g"]["state"]))
    state["opt_g"]["state"][first][key] = value


CRAFTED = [
    (lambda s: s["rng"].update(torch=s["rng"]["torch"][:100]), "bad rng in checkpoint: rng['torch']"),
    (lambda s: s["rng"].update(noise=torch.zeros(7, dtype=torch.uint8)), "bad rng in checkpoint: rng['noise']"),
    (lambda s: _set_opt_state(s, "exp_avg", torch.zeros(3)), "bad opt_g in checkpoint: state 'exp_avg'"),
    (lambda s: s["opt_d"]["param_groups"][0].update(lr=math.nan), "bad opt_d in checkpoint: param_groups[0]: lr"),
    (lambda s: s["opt_g"]["param_groups"][0].update(betas=(0.5, 2.0)), "param_groups[0]: betas"),
    (lambda s: s.update(evals=[{"step": 1, "fid": "low"}]), "bad evals in checkpoint: evals[0]['fid']"),
    (lambda s: s.update(evals=[{"step": 1, "fid": [1.0]}]), "evals[0]['fid']"),
    (lambda s: s.update(data_sha256=42), "bad data_sha256"),
] + [
    (
        lambda s, dtype=dtype: s["generator"].update({k: v.to(dtype) for k, v in s["generator"].items()}),
        "bad generator in checkpoint",
    )
    for dtype in (torch.complex64, torch.int32, torch.float16, torch.float64)
]


@pytest.mark.parametrize("change, fragment", CRAFTED)
def test_a_crafted_checkpoint_is_refused_naming_the_field_before_anything_is_written(
    finished, tmp_path, change, fragment
):
    out = _crafted(finished, tmp_path, change)
    files = {name: (out / name).read_bytes() for name in os.listdir(out)}
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        Trainer(TrainConfig(out=str(out), steps=5, progress=False), resume=True, explicit={"steps"})
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == files


# -- 8. messages -----------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_a_blocked_global_is_named_not_called_damage(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fastgan-checkpoint", "x": _Evil()}, path)
    with pytest.raises(
        CheckpointError,
        match=r"holds a Python object \((posix|os|nt)\.system\) that fastgan does "
        "not load",
    ) as info:
        load_checkpoint(path)
    assert "damaged" not in str(info.value)


def test_an_unreadable_checkpoint_is_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    path.write_bytes(b"x")

    def denied(*a, **k):  # (root reads any file: the OS's answer to anyone else)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {re.escape(str(path))}: Permission denied$"):
        load_checkpoint(path)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a folder nobody can create files in)")
@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--checkpoint", "CKPT", "--json", "/proc/fastgan.json"],
        ["bench", "train", "--device", "cpu", "--json", "/proc/fastgan.json"],
        ["bench", "ops", "--device", "cpu", "--markdown", "/proc/fastgan.md"],
        ["bench", "quality", "--device", "cpu", "--plot", "/proc/fastgan.png"],
    ],
)
def test_output_paths_that_cannot_be_written_are_refused_before_the_work(finished, args):
    t0 = time.time()
    result = fastgan(*[str(finished / "checkpoint.pt") if a == "CKPT" else a for a in args], timeout=120)
    assert result.returncode == 2 and "cannot write into /proc" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and ".tmp" not in result.stderr
    assert time.time() - t0 < 60  # refused up front, not after an evaluation or a benchmark


def test_quality_plot_must_be_a_png(capsys, tmp_path):
    from fastgan.bench import quality

    with pytest.raises(SystemExit) as info:
        quality.main(["--device", "cpu", "--plot", str(tmp_path / "fid.txt")])
    assert info.value.code == 2 and "--plot must be a .png file name" in capsys.readouterr().err


def test_a_non_utf8_out_is_refused_cleanly(tmp_path):
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/r\xff")
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        Trainer(small(out, steps=2))
    assert not os.path.exists(out)


@pytest.mark.parametrize("value", ["1e23", "2.5", "1e3"])
def test_steps_must_be_an_integer_not_a_rounded_float(value, tmp_path):
    result = fastgan("train", "--steps", value, "--out", tmp_path / "r")
    assert result.returncode == 2 and f"--steps: expected an integer, got '{value}'" in result.stderr
    with pytest.raises(ConfigError, match="--steps must be an integer"):
        Trainer(small(tmp_path / "p", steps=float(value)))


# A Ctrl-C that lands while `import torch` runs (the console script's first second or two).
# Deterministic: a finder sends the process SIGINT when torch is first looked up, then keeps
# the import busy long enough for the signal's handler to run.
_CTRL_C_AT_TORCH = """
import importlib.abc, os, signal, sys, time
class CtrlCAtTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(200):
                time.sleep(0.01)
        return None
sys.meta_path.insert(0, CtrlCAtTorch())
import fastgan_command
sys.exit(fastgan_command.main(["info"]))
"""


def test_ctrl_c_while_torch_loads_exits_130_quietly():
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AT_TORCH], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (130, "", "")


def test_the_console_script_imports_fastgan_inside_its_ctrl_c_handler():
    """A real SIGINT at several moments of `fastgan info`'s start: 130 and nothing printed
    while it loads; once the command has printed, it may also end normally."""
    for delay in (0.05, 0.2, 0.4, 0.8):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, fastgan_command; sys.exit(fastgan_command.main(['info']))"],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err and "Error" not in err, (delay, err)
        if not out:  # still loading when the signal came
            assert proc.returncode == 130, (delay, proc.returncode)


# -- 9. numbers ------------------------------------------------------------------------------


def test_the_img_per_s_of_a_resumed_epoch_counts_the_steps_trained_since_the_resume(tmp_path):
    Trainer(small(tmp_path, steps=25, batch_size=256)).fit()  # 19 steps an epoch: stops 6 into epoch 2
    lines = []
    t = Trainer(small(tmp_path, epochs=2, batch_size=256), resume=True, explicit={"epochs"})
    t._print = lambda line, logfile=True: lines.append(line)
    t._start()
    t.step = 38
    t._end_epoch(2, seconds=1.0)
    t._files.wait()
    assert f" {(38 - 25) * 256:,} img/s " in lines[-1], lines  # 13 steps in that second, not the epoch's 19


def test_resume_with_fewer_steps_trains_nothing_and_keeps_config_json(tmp_path):
    Trainer(small(tmp_path, steps=5)).fit()
    before = (tmp_path / "config.json").read_text()
    t = Trainer(small(tmp_path, steps=3, log_every=4), resume=True, explicit={"steps", "log_every"})
    t.fit()
    assert t.step == 5 and (tmp_path / "config.json").read_text() == before
