"""Swappable resources: where data lives (store, sources root) and who scores it (the backend).

Assets never build a backend or a path themselves; they ask these resources, so a laptop run (rules
backend, ./store) and a cluster run (vLLM servers, object storage mount) differ only in configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from mmssr_assets.versions import folder_version
from mmssr_core.recipes import Recipe, RecipeError, get_recipe, load_recipes, recipe_from_dict
from mmssr_core.store import Store, default_store_root

ENV_SOURCES_ROOT = "MMSSR_SOURCES_ROOT"
ENV_BACKEND = "MMSSR_BACKEND"
ENV_MODEL = "MMSSR_MODEL"
ENV_BASE_URL = "MMSSR_BASE_URL"
ENV_API_KEY = "MMSSR_API_KEY"
ENV_STYLES_BACKEND = "MMSSR_STYLES_BACKEND"
ENV_BACKEND_OPTIONS = "MMSSR_BACKEND_OPTIONS"
DEFAULT_SOURCES_ROOT = Path("examples") / "sources"  # the demo sources, when run from the repository's root


def default_sources_root() -> Path:
    """$MMSSR_SOURCES_ROOT, else ./examples/sources of the current folder (absolute).

    Never the folder this package was installed from: an installed wheel has no examples."""
    env = os.environ.get(ENV_SOURCES_ROOT)
    return Path(env).resolve() if env else DEFAULT_SOURCES_ROOT.resolve()


class StoreResource(dg.ConfigurableResource):
    """The Parquet store. `root` unset: $MMSSR_STORE, else ./store."""

    root: Optional[str] = Field(default=None, description="store root folder (default $MMSSR_STORE or ./store)")

    def store(self) -> Store:
        return Store(self.root) if self.root else Store(default_store_root())


class SourcesResource(dg.ConfigurableResource):
    """The folder whose sub-folders are sources (one pool file plus its images each)."""

    root: Optional[str] = Field(
        default=None, description="sources root (default $MMSSR_SOURCES_ROOT or examples/sources)"
    )

    def path(self) -> Path:
        return Path(self.root).resolve() if self.root else default_sources_root()

    def discover(self) -> dict[str, Path]:
        """Source name -> folder, for every sub-folder holding a pool file."""
        from mmssr_core.ingest import discover_sources

        root = self.path()
        if not root.is_dir():
            return {}
        return dict(discover_sources(root))

    def fingerprint(self, name: str) -> str:
        """The observed data version of a source folder (names, sizes, mtimes): cheap, no content read."""
        return folder_version(self.path() / name)


class RecipesResource(dg.ConfigurableResource):
    """Where selection recipes come from. Read when a run or a tick needs them, never when the code
    location loads: defaults + `<store>/recipes.toml` + $MMSSR_RECIPES, or `file` instead of the last two,
    or exactly the `inline` recipes (tests, `mmssr materialize --recipes`)."""

    file: Optional[str] = Field(default=None, description="recipe file (TOML/JSON) used with the defaults")
    inline: Optional[str] = Field(
        default=None, description="exactly these recipes: a JSON list of mappings (name, budget, capabilities...)"
    )

    def load(self, store_root: str | os.PathLike | None) -> list[Recipe]:
        if self.inline is not None:
            return [recipe_from_dict(d) for d in json.loads(self.inline)]
        if self.file:
            return load_recipes(self.file)
        return load_recipes(store_root=store_root)

    def get(self, name: str, store_root: str | os.PathLike | None) -> Recipe:
        """The recipe of a partition key; a clear failure when the key names no recipe (anymore)."""
        try:
            return get_recipe(name, self.load(store_root))
        except RecipeError as exc:
            raise dg.Failure(f"recipe partition {name!r}: {exc}") from None

    @classmethod
    def of(cls, recipes: list[Recipe] | None) -> "RecipesResource":
        return cls() if recipes is None else cls(inline=json.dumps([r.to_dict() for r in recipes]))


class ScorerResource(dg.ConfigurableResource):
    """The scoring backend: `rules` (weight-free, default), `transformers`, `vllm` or `openai`.

    Secrets (`api_key`) come through `dg.EnvVar` so they never appear in run config or the UI.
    `options` holds any further keyword arguments of the backend (device, dtype, tensor_parallel...).
    """

    backend: str = Field(default="rules", description="rules | transformers | vllm | openai")
    model: Optional[str] = Field(default=None, description="model path or name (transformers, vllm, openai)")
    base_url: Optional[str] = Field(default=None, description="OpenAI-compatible server URL (openai backend)")
    api_key: Optional[str] = Field(default=None, description="API key; pass dg.EnvVar('MMSSR_API_KEY')")
    options: dict[str, Any] = Field(default_factory=dict, description="extra backend keyword arguments")
    taxonomy_path: Optional[str] = Field(default=None, description="taxonomy config (default $MMSSR_TAXONOMY)")
    profile: str = Field(
        default="reference",
        description="input profile: reference (the released scorer's exact inputs), clean, or native",
    )
    styles_backend: Optional[str] = Field(
        default=None,
        description="backend of the styles when it differs (e.g. rules): `backend` then scores only the capabilities",
    )
    styles_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of styles_backend")

    def backend_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = dict(self.options)
        for key in ("model", "base_url", "api_key"):
            value = getattr(self, key)
            if value:
                opts[key] = value
        if "," in str(opts.get("base_url") or ""):  # several replicas: "http://a:8000/v1,http://b:8000/v1"
            opts["base_urls"] = [u.strip() for u in opts.pop("base_url").split(",") if u.strip()]
        return opts

    def backends(self) -> list[str]:
        """The backend names that produce scores (the styles' own backend included)."""
        return [self.backend] + ([self.styles_backend] if self.styles_backend else [])

    def get_backend(self):
        from mmssr_core.scoring import get_backend

        return get_backend(self.backend, **self.backend_options())

    def get_styles_backend(self):
        """The styles' own backend, or None when `backend` does both."""
        if not self.styles_backend or self.styles_backend == self.backend and not self.styles_options:
            return None
        from mmssr_core.scoring import get_backend

        return get_backend(self.styles_backend, **self.styles_options)

    def taxonomy(self):
        from mmssr_core.taxonomy import load_taxonomy

        return load_taxonomy(self.taxonomy_path)

    def fingerprint(self) -> str:
        """Changes when the scorer's identity changes (backend, model, options, taxonomy, prompts).

        Computed from configuration without loading a model: it is the scoring step's code version, so
        another scorer marks every source's scores stale in the UI.
        The secret is left out on purpose.
        """
        from mmssr_core.prompts import PromptSet

        taxonomy = self.taxonomy()
        blob = {
            "backend": self.backend,
            "model": self.model,
            "base_url": self.base_url,
            "options": self.options,
            "taxonomy": taxonomy.to_dict(),
            "prompt_version": PromptSet.from_taxonomy(taxonomy, profile=self.profile).version,
        }
        if self.styles_backend:  # only when set, so existing fingerprints do not change
            blob["styles"] = {"backend": self.styles_backend, "options": self.styles_options}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_scorer() -> ScorerResource:
    """The scorer from the environment: $MMSSR_BACKEND (rules), $MMSSR_MODEL, $MMSSR_BASE_URL (comma-separated
    for several replicas), $MMSSR_API_KEY, $MMSSR_STYLES_BACKEND (e.g. rules, for the styles only),
    $MMSSR_BACKEND_OPTIONS (JSON: further backend keyword arguments, e.g. per-replica concurrency)."""
    kwargs: dict[str, Any] = {"backend": os.environ.get(ENV_BACKEND, "rules")}
    if os.environ.get(ENV_MODEL):
        kwargs["model"] = os.environ[ENV_MODEL]
    if os.environ.get(ENV_BASE_URL):
        kwargs["base_url"] = os.environ[ENV_BASE_URL]
    if os.environ.get(ENV_STYLES_BACKEND):
        kwargs["styles_backend"] = os.environ[ENV_STYLES_BACKEND]
    if os.environ.get(ENV_BACKEND_OPTIONS):  # e.g. {"concurrency": 16, "timeout": 120}
        try:
            kwargs["options"] = json.loads(os.environ[ENV_BACKEND_OPTIONS])
        except ValueError as exc:
            raise ValueError(f"${ENV_BACKEND_OPTIONS} is not a JSON object: {exc}") from None
    if os.environ.get(ENV_API_KEY):
        kwargs["api_key"] = dg.EnvVar(ENV_API_KEY)
    return ScorerResource(**kwargs)
