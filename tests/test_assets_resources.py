"""Resources: configuration from the environment, secrets through EnvVar, fingerprints without secrets."""

from __future__ import annotations

import dagster as dg

from mmssr_assets.resources import ScorerResource, SourcesResource, StoreResource, default_scorer


def test_scorer_from_environment_keeps_the_secret_in_an_envvar(monkeypatch):
    monkeypatch.setenv("MMSSR_BACKEND", "openai")
    monkeypatch.setenv("MMSSR_MODEL", "mmssr-7b-scorer")
    monkeypatch.setenv("MMSSR_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MMSSR_API_KEY", "s3cret")
    scorer = default_scorer()
    assert isinstance(scorer.api_key, dg.EnvVar)  # the definition holds the variable's name, not the value
    with dg.build_resources({"scorer": scorer}) as res:
        opts = res.scorer.backend_options()
        assert opts == {"model": "mmssr-7b-scorer", "base_url": "http://127.0.0.1:9/v1", "api_key": "s3cret"}
        backend = res.scorer.get_backend()
        assert backend.name == "openai"
        fp = res.scorer.fingerprint()
    monkeypatch.setenv("MMSSR_API_KEY", "rotated")
    with dg.build_resources({"scorer": default_scorer()}) as res:
        assert res.scorer.fingerprint() == fp  # rotating a key does not trigger rescoring
    monkeypatch.setenv("MMSSR_MODEL", "another-model")
    with dg.build_resources({"scorer": default_scorer()}) as res:
        assert res.scorer.fingerprint() != fp  # another model does


def test_rules_by_default(monkeypatch):
    for var in ("MMSSR_BACKEND", "MMSSR_MODEL", "MMSSR_BASE_URL", "MMSSR_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    scorer = default_scorer()
    assert scorer.backend == "rules" and scorer.backend_options() == {}
    assert scorer.get_backend().name == "rules"


def test_store_and_sources_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSSR_STORE", str(tmp_path / "s"))
    monkeypatch.setenv("MMSSR_SOURCES_ROOT", str(tmp_path / "src"))
    assert StoreResource().store().root == tmp_path / "s"
    assert StoreResource(root=str(tmp_path / "x")).store().root == tmp_path / "x"
    assert SourcesResource().path() == tmp_path / "src"
    assert SourcesResource().discover() == {}  # a missing root is empty, not an error
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "pool.json").write_text("[]")
    before = SourcesResource().fingerprint("a")
    (tmp_path / "src" / "a" / "pool.json").write_text("[{}]")
    assert SourcesResource().fingerprint("a") != before
    assert list(SourcesResource().discover()) == ["a"]
    assert ScorerResource().fingerprint() == ScorerResource().fingerprint()
