"""What a checkpoint read by fastgan.train.checkpoint must hold, and the messages when it does
not: a torch file with the wrong content is a CheckpointError naming the field (no traceback
later in sample or --resume), torch's read errors without its weights_only=False advice, and
load_state_dict's errors compacted to a few lines."""

import math
import re
import typing

import torch

from fastgan.train.config import CheckpointError, ConfigError, TrainConfig, field_types, type_ok

MAX_DETAIL_LINES = 4  # compact_load_error: lines of torch's error kept below the first line


# -- reading errors ------------------------------------------------------------------------


def read_error(path, exc):
    """One message for an exception of torch.load, without torch's advice to load with
    weights_only=False (wrong for a damaged file, and against fastgan's rule)."""
    text = str(exc).strip()
    head = f"cannot read checkpoint {path}"
    if isinstance(exc, OSError) and exc.strerror:  # permission denied, an I/O error: not damage
        return f"{head}: {exc.strerror}"
    if "weights_only" in text and ("False" in text or "will likely succeed" in text):
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(
            r"unsupported GLOBAL ([\w.]+) whose module", text
        )
        if found:
            return (
                f"{head}: it holds a Python object ({found.group(1)}) that fastgan does not "
                "load (checkpoints are read with weights_only=True: tensors, numbers, strings, "
                "lists and dicts only)"
            )
        return f"{head}: the file is damaged, truncated or not a torch file"
    first = text.splitlines()[0] if text else ""
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return f"{head} (damaged, truncated or not written by fastgan train): {detail}"


# -- content checks ------------------------------------------------------------------------


def load_config(path, raw):
    """raw (the checkpoint's config dict) as a validated TrainConfig, else CheckpointError."""

    def bad(message):
        # validate() speaks of command-line options (--latent-dim); name the stored fields
        message = re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), str(message))
        return CheckpointError(f"{path}: bad config in checkpoint: {message}")

    if not isinstance(raw, dict):
        raise bad(f"a {type(raw).__name__}, not a dict of training options")
    for name, kind in field_types().items():  # from_dict would int() them without naming them
        if typing.Tuple[int, ...] in typing.get_args(kind) and raw.get(name) is not None:
            v = raw[name]
            if not isinstance(v, (list, tuple)) or not all(type_ok(w, int) for w in v):
                raise bad(f"{name} must be a list of integers, got {v!r}")
    try:  # validate() type-checks every field first (TrainConfig.normalize)
        return TrainConfig.from_dict(raw).validate()
    except (ConfigError, TypeError, ValueError) as exc:
        raise bad(exc) from None


def check_content(path, state):
    """CheckpointError naming the first field of state that is not what the trainer writes."""

    def bad(name, message):
        return CheckpointError(f"{path}: bad {name} in checkpoint: {message}")

    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad("step", f"must be an integer >= 0, got {step!r}")
    for name in ("generator", "discriminator", "generator_ema"):
        if name in state:
            _check_tensor_dict(state[name], lambda message, name=name: bad(name, message))
    for name in ("opt_g", "opt_d"):
        if name in state:
            opt = state[name]
            if not isinstance(opt, dict):
                raise bad(name, f"an optimizer state must be a dict, got {type(opt).__name__}")
            if (
                not isinstance(opt.get("state"), dict)
                or not isinstance(opt.get("param_groups"), list)
                or not all(isinstance(g, dict) for g in opt["param_groups"])
            ):
                raise bad(name, "an optimizer state must hold a 'state' dict and a 'param_groups' list of dicts")
            for i, group in enumerate(opt["param_groups"]):
                problem = _group_problem(group)
                if problem:
                    raise bad(name, f"param_groups[{i}]: {problem}")
            for key, s in opt["state"].items():
                if not isinstance(s, dict) or not all(isinstance(v, (torch.Tensor, int, float)) for v in s.values()):
                    raise bad(name, f"the state of parameter {key!r} must be a dict of tensors and numbers")
    if "history" in state:
        h = state["history"]
        if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[1] != 2:
            got = f"shape {tuple(h.shape)}" if isinstance(h, torch.Tensor) else type(h).__name__
            raise bad("history", f"must be a tensor of shape (N, 2) (the losses of D and G), got {got}")
    if "rng" in state:
        rng = state["rng"]
        if not isinstance(rng, dict):
            raise bad("rng", f"the random states must be a dict, got {type(rng).__name__}")
        for key in ("torch", "noise", "epoch", "cuda"):
            if key in rng and not (isinstance(rng[key], torch.Tensor) and rng[key].dtype == torch.uint8):
                raise bad("rng", f"rng[{key!r}] must be a uint8 tensor (a generator state), got {_describe(rng[key])}")
        if "device" in rng and not isinstance(rng["device"], str):
            raise bad("rng", f"rng['device'] must be a device name, got {rng['device']!r}")
    if "train_seconds" in state:
        t = state["train_seconds"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
            raise bad("train_seconds", f"must be a number >= 0, got {t!r}")
    if "evals" in state:
        evals = state["evals"]
        if not isinstance(evals, list) or not all(
            isinstance(e, dict) and isinstance(e.get("step"), int) and not isinstance(e["step"], bool) for e in evals
        ):
            raise bad("evals", "must be a list of dicts, each with an integer 'step'")
        for i, e in enumerate(evals):
            for key in EVAL_NUMBERS:  # (a missing or None value is an empty cell of history.csv)
                v = e.get(key)
                if v is not None and not _number(v):
                    raise bad("evals", f"evals[{i}][{key!r}] must be a number, got {_describe(v)}")
    if "data_sha256" in state:
        h = state["data_sha256"]
        if not isinstance(h, str) or not re.fullmatch(r"[0-9a-f]{64}", h):
            raise bad("data_sha256", f"must be a sha256 in hex, got {_describe(h)}")


EVAL_NUMBERS = ("train_seconds", "fid", "inception_score", "class_entropy", "label_accuracy")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _group_problem(group):
    """What is wrong with an optimizer's param group's settings (a NaN lr...), or None."""
    for key in ("lr", "eps", "weight_decay", "alpha", "momentum"):
        if key in group:
            v = group[key]
            low_ok = key in ("weight_decay", "momentum")  # these may be 0
            if not _number(v) or not math.isfinite(v) or v < 0 or (v == 0 and not low_ok):
                return f"{key} must be a {'non-negative' if low_ok else 'positive'} number, got {_describe(v)}"
    if "betas" in group:
        b = group["betas"]
        if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(_number(x) and 0 <= x < 1 for x in b)):
            return f"betas must be two numbers in [0, 1), got {_describe(b)}"
    if "params" in group and not (
        isinstance(group["params"], list)
        and all(isinstance(p, int) and not isinstance(p, bool) for p in group["params"])
    ):
        return "params must be a list of parameter indices"
    return None


def _check_tensor_dict(value, bad):
    if not isinstance(value, dict):
        raise bad(f"the weights must be a dict of tensors, got {_describe(value)}")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise bad(f"the weights must be named by strings, got the key {key!r}")
        if not isinstance(tensor, torch.Tensor):
            raise bad(f"{key!r} must be a tensor, got {_describe(tensor)}")
        # float32 weights and int64 batch counters, as the trainer writes them: anything else
        # would be cast silently by load_state_dict (a complex weight to its real part)
        want = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        if tensor.dtype != want:
            raise bad(f"{key!r} must be a {want} tensor, got {_describe(tensor)}")


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


# -- load_module_state's message -----------------------------------------------------------

_SIZE = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[(.*?)\]\) from "
    r"checkpoint, the shape in current model is torch\.Size\(\[(.*?)\]\)\.?"
)
_KEYS = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)")


def _short_list(items, keep):
    more = len(items) - keep
    return ", ".join(items[:keep]) + (f", ... ({more} more)" if more > 0 else "")


def compact_load_error(text):
    """torch's load_state_dict error in at most 1 + MAX_DETAIL_LINES lines: its problems
    (missing keys, unexpected keys, size mismatches) grouped, long lists cut short."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict for"):
        head, lines = lines[0].rstrip(":"), lines[1:]
    else:
        head = None
    out, sizes = [], []
    for line in lines:
        m = _SIZE.match(line)
        if m:
            sizes.append(f"{m.group(1)} [{m.group(2)}] in the file, [{m.group(3)}] in the model")
            continue
        m = _KEYS.match(line)
        if m:
            keys = [k.strip().strip('"') for k in m.group(2).strip().rstrip(".").split(",") if k.strip()]
            out.append(f"{m.group(1).lower()} keys: {_short_list(keys, 6)}")
            continue
        out.append(line if len(line) <= 200 else line[:197] + "...")
    if sizes:
        shown = "; ".join(sizes[:2]) + (f"; ... ({len(sizes) - 2} more)" if len(sizes) > 2 else "")
        out.append(f"size mismatch for {len(sizes)} tensor{'s' if len(sizes) > 1 else ''}: {shown}")
    if head and not out:
        out.append(head)
    if len(out) > MAX_DETAIL_LINES:
        out = out[: MAX_DETAIL_LINES - 1] + [f"... ({len(out) - MAX_DETAIL_LINES + 1} more problems)"]
    if not out:
        return "(no details from torch)"
    if len(out) == 1:
        return out[0]
    return "\n" + "\n".join("  " + ln for ln in out)
