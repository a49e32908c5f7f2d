"""The paper's downstream loop: subset -> training data -> external train-and-evaluate -> benchmark table.

Training a multimodal model is not something this package does; it runs *your* command. Per recipe:
1. export the subset for training (LLaVA JSON via `mmssr_core.export`, plus a LLaMA-Factory
   `dataset_info.json` entry beside it);
2. run a configurable command template with placeholders (see PLACEHOLDERS) as a subprocess, without a
   shell, its stdout/stderr going to log files in a run folder;
3. read back the benchmark results file it wrote (RESULTS FORMAT below) and store it, atomically, as
   `downstream/<recipe>.json` in the store. A failing command raises DownstreamError with the exit code
   and the tail of stderr, and leaves any earlier results of the recipe untouched.
`paper_table` then renders the paper's shape: per benchmark score, share of the full-data run, and how
many benchmarks each recipe beats the random subset of the same budget on.

RESULTS FORMAT (the file the command writes at `{results}`, i.e. `{out}/results.json`)::

    {"benchmarks": {"MMBench": 80.1, "MMStar": 61.2, "MME": 1580.0, ...},   # required: name -> number
     "model": "path or name of the trained model",                          # optional
     "meta": {...}}                                                         # optional, kept as is

Scores are numbers where higher is better (accuracies, MME totals); names are free-form but must match
across recipes to be compared.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shlex
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import polars as pl

from mmssr_core.schema import DOWNSTREAM_TABLE as RESULTS_TABLE  # train+eval results, one JSON per recipe
from mmssr_core.store import Store, check_name

RESULTS_FILE = "results.json"
FULL_RECIPE = "full"
ENV_COMMAND = "MMSSR_TRAIN_EVAL_CMD"
PLACEHOLDERS = {
    "dataset": "path of the exported training file (LLaVA JSON; dataset_info.json names its ShareGPT twin)",
    "dataset_dir": "folder holding the training file and dataset_info.json (LLaMA-Factory dataset_dir)",
    "dataset_name": "the dataset's name in dataset_info.json (= the recipe name)",
    "dataset_info": "path of the LLaMA-Factory dataset_info.json",
    "image_root": "folder the exported image paths are relative to (= dataset_dir)",
    "recipe": "the recipe name",
    "out": "a fresh, empty folder for this run (checkpoints, logs)",
    "results": "where the command must write the results JSON ({out}/results.json)",
}
STDERR_TAIL = 2000


class DownstreamError(RuntimeError):
    """A train-and-evaluate run that failed or wrote unusable results; names the recipe and the cause."""


# -- results files ------------------------------------------------------------------------------
def validate_results(obj, where: str) -> dict[str, float]:
    """The `benchmarks` mapping of a results object, checked: non-empty, names -> finite numbers."""
    if not isinstance(obj, dict) or not isinstance(obj.get("benchmarks"), dict):
        raise DownstreamError(f"{where}: expected a JSON object with a 'benchmarks' mapping of name -> score")
    bench = obj["benchmarks"]
    if not bench:
        raise DownstreamError(f"{where}: 'benchmarks' is empty")
    out: dict[str, float] = {}
    for name, value in bench.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DownstreamError(f"{where}: benchmark {name!r} has score {value!r}, expected a finite number")
        out[str(name)] = float(value)
    return out


def read_results_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DownstreamError(f"results file {p} does not exist") from None
    except ValueError as exc:
        raise DownstreamError(f"results file {p} is not valid JSON: {exc}") from None
    validate_results(obj, str(p))
    return obj


def store_results(store: Store, recipe: str, results: dict, **info) -> dict:
    """Record a recipe's benchmark results in the store (atomic; replaces the previous record)."""
    check_name(recipe, "recipe")
    record = {
        "recipe": recipe,
        "benchmarks": validate_results(results, f"results of recipe {recipe!r}"),
        "model": results.get("model"),
        "meta": results.get("meta"),
        "recorded_at": _now(),
        **info,
    }
    store.write_json(RESULTS_TABLE, recipe, record)
    return record


def import_results(
    store: Store, recipe: str, path: str | os.PathLike, *, method: str | None = None, budget=None
) -> dict:
    """Record a results file produced elsewhere (e.g. the full-data run on a cluster)."""
    return store_results(
        store, recipe, read_results_file(path), method=method, budget=_budget_str(budget), results_file=str(path)
    )


def from_lmms_eval(obj: dict, pick: Mapping[str, str] | None = None) -> dict:
    """Convert an lmms-eval results file (`{"results": {task: {"metric,filter": value, ...}}}`) to ours.

    `pick` maps task -> metric key (e.g. {"mme": "mme_percetion_score,none"}); otherwise the first
    numeric metric of each task that is not a `_stderr`. Scores in 0..1 stay as they are.
    """
    res = obj.get("results") if isinstance(obj, dict) else None
    if not isinstance(res, dict) or not res:
        raise DownstreamError("not an lmms-eval results file: no 'results' mapping")
    bench: dict[str, float] = {}
    for task, metrics in res.items():
        if not isinstance(metrics, dict):
            continue
        keys = (
            [pick[task]]
            if pick and task in pick
            else [k for k in metrics if "," in k and "stderr" not in k.split(",")[0] and k != "alias"]
        )
        for k in keys:
            v = metrics.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                bench[task] = float(v)
                break
    if not bench:
        raise DownstreamError("the lmms-eval results file holds no numeric metric")
    return {"benchmarks": bench, "meta": {"converted_from": "lmms-eval"}}


def load_results(store: Store, recipes: Sequence[str] | None = None) -> dict[str, dict]:
    """Stored records by recipe (all recipes with a record, or those named)."""
    d = store.table_dir(RESULTS_TABLE)
    names = (
        recipes
        if recipes is not None
        else sorted(p.stem for p in d.glob("*.json") if not p.name.startswith("."))
        if d.is_dir()
        else []
    )
    return {n: store.read_json(RESULTS_TABLE, n) for n in names if store.path(RESULTS_TABLE, n, ".json").exists()}


# -- export --------------------------------------------------------------------------------------
def export_for_training(
    store: Store,
    recipe: str,
    selection: pl.DataFrame,
    out_dir: str | os.PathLike,
    *,
    fmt: str = "llava",
) -> dict[str, str]:
    """Write the subset's training file (from the store's raw_pool) and a LLaMA-Factory
    dataset_info.json beside it; image paths in the file are relative to `out_dir`.

    Returns the placeholder values {dataset, dataset_dir, dataset_name, dataset_info, image_root}.
    """
    from mmssr_core import export as ex

    out = Path(out_dir).absolute()
    try:
        res = ex.export_selection(selection, store, fmt, out / f"{recipe}.json", name=recipe)
    except ex.ExportError as exc:
        raise DownstreamError(f"cannot export recipe {recipe!r} for training: {exc}") from None
    info_path = Path(res["dataset_info"])
    return {
        "dataset": str(res["path"]),
        "dataset_dir": str(out),
        "dataset_name": res["dataset_name"],
        "dataset_info": str(info_path),
        "image_root": str(out),
    }


# -- the external command ------------------------------------------------------------------------
@dataclass
class TrainEvalCommand:
    """A command template run per recipe. A string is split like a shell would (shlex), then each word
    is filled in, so paths with spaces stay one argument and nothing is interpreted by a shell (write
    `bash -c '...'` yourself if you need one)."""

    template: str | Sequence[str]
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    @classmethod
    def from_env(cls, **kw) -> "TrainEvalCommand":
        t = os.environ.get(ENV_COMMAND)
        if not t:
            raise DownstreamError(
                f"no train-and-evaluate command: set ${ENV_COMMAND} (placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
            )
        return cls(t, **kw)

    def words(self) -> list[str]:
        words = shlex.split(self.template) if isinstance(self.template, str) else [str(w) for w in self.template]
        if not words:
            raise DownstreamError("the train-and-evaluate command is empty")
        for w in words:
            for _, name, _, _ in string.Formatter().parse(w):
                if name is not None and name not in PLACEHOLDERS:
                    raise DownstreamError(
                        f"unknown placeholder {{{name}}} in the train-and-evaluate command; known: "
                        + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                    )
        return words

    def argv(self, values: Mapping[str, str]) -> list[str]:
        return [w.format(**{k: values.get(k, "") for k in PLACEHOLDERS}) for w in self.words()]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _budget_str(budget) -> str | None:
    if budget is None:
        return None
    return f"{budget:g}" if isinstance(budget, float) else str(budget)


def _tail(path: Path, n: int = STDERR_TAIL) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_train_eval(
    store: Store,
    recipe: str,
    command: TrainEvalCommand,
    values: Mapping[str, str],
    *,
    method: str | None = None,
    budget=None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the command for one recipe and store its results; raise DownstreamError on any failure.

    `values` fills the placeholders (from `export_for_training`); {recipe}, {out} and {results} are
    added here. The run folder `downstream/runs/<recipe>-<time>/` keeps stdout.log and stderr.log.
    """
    check_name(recipe, "recipe")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    out = store.table_dir(RESULTS_TABLE) / "runs" / f"{recipe}-{stamp}"
    out.mkdir(parents=True, exist_ok=False)
    results_path = out / RESULTS_FILE
    vals = {**values, "recipe": recipe, "out": str(out), "results": str(results_path)}
    argv = command.argv(vals)
    env = {**os.environ, **dict(command.env), "MMSSR_RECIPE": recipe, "MMSSR_RESULTS": str(results_path)}
    (log or (lambda m: None))(f"downstream {recipe}: running {shlex.join(argv)}")
    t0 = time.monotonic()
    stdout_p, stderr_p = out / "stdout.log", out / "stderr.log"
    with open(stdout_p, "wb") as so, open(stderr_p, "wb") as se:
        try:
            proc = subprocess.run(
                argv, stdout=so, stderr=se, env=env, cwd=command.cwd, timeout=command.timeout_s, check=False
            )
            rc = proc.returncode
        except FileNotFoundError:
            raise DownstreamError(f"train-and-evaluate command for recipe {recipe!r} not found: {argv[0]!r}") from None
        except PermissionError:
            raise DownstreamError(
                f"train-and-evaluate command for recipe {recipe!r} is not executable: {argv[0]!r}"
            ) from None
        except subprocess.TimeoutExpired:
            raise DownstreamError(
                f"train-and-evaluate command for recipe {recipe!r} timed out after {command.timeout_s}s; "
                f"logs in {out}; stderr tail:\n{_tail(stderr_p)}"
            ) from None
    duration = time.monotonic() - t0
    if rc != 0:
        raise DownstreamError(
            f"train-and-evaluate command for recipe {recipe!r} failed with exit code {rc} "
            f"({shlex.join(argv)[:300]}); earlier results kept; logs in {out}; stderr tail:\n{_tail(stderr_p)}"
        )
    try:
        results = read_results_file(results_path)
    except DownstreamError as exc:
        raise DownstreamError(f"recipe {recipe!r}: the command exited 0 but {exc}; earlier results kept") from None
    return store_results(
        store,
        recipe,
        results,
        method=method,
        budget=_budget_str(budget),
        command=argv,
        dataset=values.get("dataset"),
        run_dir=str(out),
        results_file=str(results_path),
        duration_s=round(duration, 3),
    )


# -- the paper's table ---------------------------------------------------------------------------
def paper_table(
    records: Mapping[str, dict],
    *,
    full: str = FULL_RECIPE,
    random_of: Mapping[str, str] | None = None,
    benchmarks: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One row per recipe: score per benchmark, its share of the full-data run (%), the mean share
    ("share_of_full", the paper's headline), and benchmarks beaten over random at the same budget.

    The random run of a recipe is `random_of[recipe]` if given, else the recorded recipe with method
    "random" and the same budget. Missing full or random runs leave those columns null.
    """
    if not records:
        return pl.DataFrame()
    names = list(benchmarks) if benchmarks else sorted({b for r in records.values() for b in r["benchmarks"]})
    full_b = records.get(full, {}).get("benchmarks") if full in records else None
    randoms = {
        r.get("budget"): n
        for n, r in records.items()
        if (r.get("method") or "").lower() == "random" and r.get("budget") is not None
    }
    rows = []
    for name, rec in records.items():
        b = rec["benchmarks"]
        row: dict = {"recipe": name, "method": rec.get("method"), "budget": rec.get("budget")}
        for bench in names:
            row[bench] = b.get(bench)
        shares = []
        for bench in names:
            s = None
            if full_b and b.get(bench) is not None and full_b.get(bench):
                s = 100.0 * b[bench] / full_b[bench]
                shares.append(s)
            row[f"{bench} %full"] = s
        row["share_of_full"] = sum(shares) / len(shares) if full_b and shares else None
        rnd = (random_of or {}).get(name) or (
            randoms.get(rec.get("budget")) if (rec.get("method") or "").lower() != "random" else None
        )
        rnd_b = records.get(rnd, {}).get("benchmarks") if rnd and rnd != name else None
        row["random_recipe"] = rnd if rnd_b else None
        if rnd_b:
            common = [x for x in names if b.get(x) is not None and rnd_b.get(x) is not None]
            row["beaten_random"] = sum(1 for x in common if b[x] > rnd_b[x])
            row["compared"] = len(common)
        else:
            row["beaten_random"] = None
            row["compared"] = None
        rows.append(row)
    schema = {"recipe": pl.Utf8, "method": pl.Utf8, "budget": pl.Utf8}
    schema |= {x: pl.Float64 for x in names} | {f"{x} %full": pl.Float64 for x in names}
    schema |= {"share_of_full": pl.Float64, "random_recipe": pl.Utf8, "beaten_random": pl.Int64, "compared": pl.Int64}
    df = pl.DataFrame(rows, schema=schema)
    return (
        df.with_columns(_full_last=pl.col("recipe") == full)
        .sort(["_full_last", "budget", "method", "recipe"], nulls_last=True)
        .drop("_full_last")
    )


def table_markdown(df: pl.DataFrame) -> str:
    """The paper's table as Markdown: `score (share of full %)` per benchmark, mean share, beaten/compared."""
    if df.height == 0:
        return "_no downstream results yet_"
    benches = [
        c
        for c in df.columns
        if c not in ("recipe", "method", "budget", "share_of_full", "random_recipe", "beaten_random", "compared")
        and not c.endswith(" %full")
    ]
    head = ["recipe", "method", "budget", *benches, "share of full (%)", "beats random"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(benches) + 2)]
    for r in df.iter_rows(named=True):
        cells = [r["recipe"], r["method"] or "", r["budget"] or ""]
        for bch in benches:
            v, s = r[bch], r[f"{bch} %full"]
            cells.append("–" if v is None else (f"{v:.2f}" + (f" ({s:.1f}%)" if s is not None else "")))
        cells.append("–" if r["share_of_full"] is None else f"{r['share_of_full']:.2f}")
        cells.append("–" if r["beaten_random"] is None else f"{r['beaten_random']}/{r['compared']}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
