import json

import pytest

from mmssr_core.taxonomy import DEFAULT_STYLES, Taxonomy, TaxonomyError, load_taxonomy


def test_defaults_are_the_papers_14_capabilities_and_9_styles():
    tax = Taxonomy()
    assert len(tax.keys) == 14 and len(set(tax.keys)) == 14
    assert tax.phrase("fine_grained_recognition") == "fine-grained recognition"
    assert tax.phrase("optical_character_recognition") == "optical character recognition"
    assert len(tax.styles) == 9 and tax.styles[-2] == "chain-of-thought (step-by-step)"


def test_capability_added_in_config_extends_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "tax.json"
    cfg.write_text(json.dumps({"capabilities": [{"key": "medical_imaging", "phrase": "medical imaging"}]}))
    monkeypatch.setenv("MMSSR_TAXONOMY", str(cfg))
    tax = load_taxonomy()
    assert tax.keys[-1] == "medical_imaging" and len(tax.keys) == 15
    assert tax.phrase("medical_imaging") == "medical imaging"


def test_toml_config_can_replace_capabilities(tmp_path):
    cfg = tmp_path / "tax.toml"
    cfg.write_text('extend = false\n[[capabilities]]\nkey = "ocr"\nphrase = "optical character recognition"\n')
    tax = load_taxonomy(cfg)
    assert tax.keys == ["ocr"] and tax.styles == DEFAULT_STYLES


@pytest.mark.parametrize(
    "caps, match",
    [
        ([{"key": "Bad Key"}], "must match"),
        ([{"key": "id"}], "reserved"),
        ([{"key": "humanities"}], "duplicate"),
    ],
)
def test_bad_capability_configs_are_rejected_with_the_reason(tmp_path, caps, match):
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"capabilities": caps}))
    with pytest.raises(TaxonomyError, match=match):
        load_taxonomy(cfg)


def test_resolve_keeps_order_and_rejects_unknown():
    tax = Taxonomy()
    assert tax.resolve(["stem_knowledge", "humanities"]) == ["stem_knowledge", "humanities"]
    with pytest.raises(TaxonomyError, match="unknown capabilities"):
        tax.resolve(["nope"])


def test_unreadable_config_names_the_file(tmp_path):
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(TaxonomyError, match="not valid"):
        load_taxonomy(bad)
