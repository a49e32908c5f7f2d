"""Recipes: defaults, user files (TOML/JSON) without code, validation with clear messages."""

from __future__ import annotations

import json

import pytest

from mmssr_core.recipes import DEFAULT_RECIPES, Recipe, RecipeError, get_recipe, load_recipes, recipe_from_dict


def test_defaults_are_the_papers_budgets():
    names = [r.name for r in load_recipes(store_root=None)]
    assert names == ["mmssr_5pct", "mmssr_10pct", "mmssr_30pct"]
    assert [r.budget for r in DEFAULT_RECIPES] == [0.05, 0.10, 0.30]
    assert all(r.capabilities is None and r.method == "mmssr" for r in DEFAULT_RECIPES)


@pytest.mark.parametrize(
    "value,expected", [(0.1, 0.1), ("10%", 0.1), ("0.3", 0.3), (500, 500), ("500", 500), (500.0, 500)]
)
def test_budget_forms(value, expected):
    budget = Recipe("r", budget=value).budget
    assert budget == expected and type(budget) is type(expected)


@pytest.mark.parametrize("value", [0, -1, 1.5, "abc", True, "150%", None, "1e1", "+5", "1_0", "nan"])
def test_bad_budgets(value):
    """The same strict syntax as `mmssr select --budget` (one parser for both), named with the recipe."""
    with pytest.raises(RecipeError, match="recipe 'r': budget"):
        Recipe("r", budget=value)


def test_rank_mode_is_part_of_the_recipe():
    assert all(r.rank == "integer" for r in DEFAULT_RECIPES) and "integer score" in DEFAULT_RECIPES[0].describe()
    r = recipe_from_dict({"name": "e", "budget": "10%", "rank": "expected"})
    assert r.rank == "expected" and r.to_dict()["rank"] == "expected" and "expected score (opt-in)" in r.describe()
    with pytest.raises(RecipeError, match="rank must be one of integer, expected"):
        Recipe("bad", budget=0.1, rank="float")


def test_store_file_adds_an_ocr_recipe_and_env_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("MMSSR_RECIPES", raising=False)
    (tmp_path / "recipes.toml").write_text(
        '[[recipe]]\nname = "ocr_10pct"\nbudget = "10%"\ncapabilities = ["optical_character_recognition"]\n'
    )
    recipes = load_recipes(store_root=tmp_path)
    ocr = get_recipe("ocr_10pct", recipes)
    assert ocr.capabilities == ("optical_character_recognition",) and ocr.budget == 0.1
    assert len(recipes) == 4

    env_file = tmp_path / "team.json"
    env_file.write_text(
        json.dumps(
            {"replace_defaults": True, "recipe": [{"name": "mmssr_10pct", "budget": 0.1, "threshold": 2.5, "seed": 7}]}
        )
    )
    monkeypatch.setenv("MMSSR_RECIPES", str(env_file))
    recipes = load_recipes(store_root=tmp_path)
    assert [r.name for r in recipes] == ["mmssr_10pct"]
    assert recipes[0].threshold == 2.5 and recipes[0].seed == 7


def test_recipes_become_partitions_without_reading_the_store_at_load(tmp_path, monkeypatch):
    """Loading the definitions never reads the store (a broken recipes.toml there does not stop it):
    recipes are dynamic partitions, read when a run or a tick needs them."""
    import dagster as dg

    from mmssr_assets.definitions import build_definitions
    from mmssr_assets.resources import RecipesResource

    monkeypatch.delenv("MMSSR_RECIPES", raising=False)
    (tmp_path / "recipes.toml").write_text("[[recipe]\nname=")  # unreadable: only a run may trip on it
    monkeypatch.setenv("MMSSR_STORE", str(tmp_path))
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for key in ("selected_subset", "eval_report", "recipe"):
        assert graph.get(dg.AssetKey(key)).partitions_def == dg.DynamicPartitionsDefinition(name="recipes")
    with pytest.raises(RecipeError, match="not valid TOML/JSON"):
        RecipesResource().load(tmp_path)

    ocr = Recipe("ocr_10pct", budget=0.1, capabilities=["optical_character_recognition"])
    fixed = build_definitions(store_root=tmp_path, recipes=[ocr])
    resource = fixed.resources["recipes"]
    assert resource.load(tmp_path) == [ocr]  # a fixed list round-trips through the resource's config
    assert resource.get("ocr_10pct", tmp_path) == ocr
    with pytest.raises(dg.Failure, match="recipe partition 'gone'.*unknown recipe 'gone'; known: ocr_10pct"):
        resource.get("gone", tmp_path)


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"name": "x"}, "needs a 'budget'"),
        ({"budget": 0.1}, "needs at least a 'name'"),
        ({"name": "../evil", "budget": 0.1}, "invalid recipe name"),
        ({"name": "x", "budget": 0.1, "capabilites": ["ocr"]}, "unknown fields ['capabilites']"),
        ({"name": "x", "budget": 0.1, "capabilities": "optical_character_recognition"}, "must be a list"),
        ({"name": "x", "budget": 0.1, "capabilities": []}, "capabilities is empty"),
        ({"name": "x", "budget": 0.1, "seed": "abc"}, "seed an integer"),
    ],
)
def test_bad_recipe_entries_name_the_problem(tmp_path, entry, message):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"recipe": [entry]}))
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_recipes(f)


def test_unreadable_or_invalid_files(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipes(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[recipe]\nname=")
    with pytest.raises(RecipeError, match="not valid TOML/JSON"):
        load_recipes(bad)
    monkeypatch.setenv("MMSSR_RECIPES", str(tmp_path / "missing.toml"))
    with pytest.raises(RecipeError, match="not a file"):
        load_recipes(store_root=tmp_path)
    empty = tmp_path / "empty.toml"
    empty.write_text("replace_defaults = true\n")
    with pytest.raises(RecipeError, match="no recipes"):
        load_recipes(empty)
