"""Selection recipes: named (method, budget, capabilities, threshold, seed) tuples.

Why a config file and not code: a team wants "OCR-only at 10%" next to the paper's mmSSR 5/10/30%
without touching Python. Recipe names become Dagster partition keys of `selected_subset` and
`eval_report`, and file names under `selections/` and `reports/` in the store.

Where recipes come from (later entries override earlier ones by name):
1. the defaults `mmssr_5pct`, `mmssr_10pct`, `mmssr_30pct` (mmSSR over all capabilities);
2. a `recipes.toml` / `recipes.json` (or a file named `recipes`) in the store root;
3. the file named by $MMSSR_RECIPES.

File format (TOML shown; JSON takes the same mapping)::

    replace_defaults = false          # true drops the three defaults
    [[recipe]]
    name = "ocr_10pct"
    budget = 0.10                     # a fraction of the pool (0 < r < 1), "10%", or a count (int >= 1)
    capabilities = ["optical_character_recognition"]
    method = "mmssr"                  # optional, default mmssr
    threshold = 0.0                   # optional
    seed = 0                          # optional
    rank = "integer"                  # optional: "integer" (the paper's rule) or "expected" (opt-in)
    dedup = true                      # optional: false, or a table such as {text_threshold = 0.9}
                                      # (settings: near, text_threshold, image_distance)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mmssr_core.dedup.config import DedupConfig, DedupConfigError, dedup_config
from mmssr_core.selection.budget import parse_budget
from mmssr_core.selection.errors import SelectionInputError
from mmssr_core.selection.rules import DEFAULT_RANK, RANK_MODES
from mmssr_core.store import StoreError, check_name

ENV_RECIPES = "MMSSR_RECIPES"
STORE_RECIPE_FILES = ("recipes.toml", "recipes.json", "recipes")


class RecipeError(ValueError):
    """A recipe or recipe file that cannot be used; the message names the recipe and the field."""


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str = "mmssr"
    budget: float | int = 0.1
    capabilities: tuple[str, ...] | None = None  # None: all capabilities of the taxonomy
    threshold: float = 0.0
    seed: int = 0
    rank: str = DEFAULT_RANK  # "integer" (the paper's rule) or "expected" (rank on the expected score, opt-in)
    dedup: DedupConfig = DedupConfig()  # duplicates removed before selection (recipe file: true/false/table)

    def __post_init__(self) -> None:
        try:
            check_name(self.name, "recipe")
        except StoreError as exc:
            raise RecipeError(str(exc)) from None
        try:
            object.__setattr__(self, "budget", parse_budget(self.budget).value)
        except SelectionInputError as exc:
            raise RecipeError(f"recipe {self.name!r}: {exc}") from None
        if self.rank not in RANK_MODES:
            raise RecipeError(f"recipe {self.name!r}: rank must be one of {', '.join(RANK_MODES)}, not {self.rank!r}")
        if self.capabilities is not None:
            if isinstance(self.capabilities, str):
                raise RecipeError(f"recipe {self.name!r}: capabilities must be a list, not a string")
            caps = tuple(str(c) for c in self.capabilities)
            if not caps:
                raise RecipeError(f"recipe {self.name!r}: capabilities is empty (omit it to use all)")
            object.__setattr__(self, "capabilities", caps)
        try:
            object.__setattr__(self, "threshold", float(self.threshold))
            object.__setattr__(self, "seed", int(self.seed))
        except (TypeError, ValueError):
            raise RecipeError(f"recipe {self.name!r}: threshold must be a number and seed an integer") from None
        if not isinstance(self.method, str) or not self.method:
            raise RecipeError(f"recipe {self.name!r}: method must be a non-empty string")
        try:
            object.__setattr__(self, "dedup", dedup_config(self.dedup))
        except DedupConfigError as exc:
            raise RecipeError(f"recipe {self.name!r}: {exc}") from None

    @property
    def budget_label(self) -> str:
        return f"{self.budget:g}" if isinstance(self.budget, float) else str(self.budget)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["capabilities"] = list(self.capabilities) if self.capabilities is not None else None
        d["dedup"] = self.dedup.to_dict()
        return d

    def describe(self) -> str:
        caps = "all capabilities" if self.capabilities is None else ", ".join(self.capabilities)
        budget = f"{self.budget:.0%}" if isinstance(self.budget, float) else f"{self.budget} samples"
        rank = "integer score" if self.rank == "integer" else "expected score (opt-in)"
        return (
            f"{self.method} at {budget} over {caps}, ranked on the {rank} (threshold {self.threshold:g}, "
            f"seed {self.seed}; {self.dedup.describe()})"
        )


DEFAULT_RECIPES: tuple[Recipe, ...] = (
    Recipe("mmssr_5pct", budget=0.05),
    Recipe("mmssr_10pct", budget=0.10),
    Recipe("mmssr_30pct", budget=0.30),
)

_FIELDS = {"name", "method", "budget", "capabilities", "threshold", "seed", "rank", "dedup"}


def recipe_from_dict(data: dict) -> Recipe:
    if not isinstance(data, dict) or "name" not in data:
        raise RecipeError(f"recipe entry {data!r} needs at least a 'name' and a 'budget'")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise RecipeError(f"recipe {data['name']!r}: unknown fields {unknown}; allowed: {sorted(_FIELDS)}")
    if "budget" not in data:
        raise RecipeError(f"recipe {data['name']!r} needs a 'budget'")
    return Recipe(**data)


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json" or (path.suffix != ".toml" and text.lstrip().startswith(("{", "["))):
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise RecipeError(f"recipe file {path} is not valid TOML/JSON: {exc}") from exc
    if isinstance(data, list):
        data = {"recipe": data}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path} must hold a mapping with a 'recipe' list")
    return data


def recipe_files(store_root: str | os.PathLike | None = None) -> list[Path]:
    """The recipe files that apply, in override order."""
    files: list[Path] = []
    if store_root is not None:
        for name in STORE_RECIPE_FILES:
            p = Path(store_root) / name
            if p.is_file():
                files.append(p)
                break
    env = os.environ.get(ENV_RECIPES)
    if env:
        p = Path(env)
        if not p.is_file():
            raise RecipeError(f"${ENV_RECIPES} names {p}, which is not a file")
        files.append(p)
    return files


def load_recipes(path: str | os.PathLike | None = None, *, store_root: str | os.PathLike | None = None) -> list[Recipe]:
    """Defaults, then the store's recipe file, then $MMSSR_RECIPES (or `path` instead of both)."""
    files = [Path(path)] if path is not None else recipe_files(store_root)
    recipes: dict[str, Recipe] = {r.name: r for r in DEFAULT_RECIPES}
    for f in files:
        data = _read_config(f)
        if data.get("replace_defaults"):
            recipes = {}
        entries = data.get("recipe", data.get("recipes", []))
        if not isinstance(entries, list):
            raise RecipeError(f"recipe file {f}: 'recipe' must be a list of tables")
        for entry in entries:
            r = recipe_from_dict(entry)
            recipes[r.name] = r
    if not recipes:
        raise RecipeError("no recipes: the recipe files dropped the defaults and defined none")
    return list(recipes.values())


def get_recipe(name: str, recipes: list[Recipe] | None = None, **kwargs) -> Recipe:
    recipes = recipes if recipes is not None else load_recipes(**kwargs)
    for r in recipes:
        if r.name == name:
            return r
    raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(r.name for r in recipes)}")
