"""export-scorer-data: the exported conversations are exactly the scorer's prompts (byte for byte), image
paths resolve from the output file, and a capability added in configuration flows through labelling,
export, scoring, the scores table, selection and agreement without a code change."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from _scoring_pool import write_pool

from mmssr_core.prompts import IMAGE_TOKEN, PromptSet
from mmssr_core.taxonomy import Taxonomy, load_taxonomy
from mmssr_core.teacher import TEACHER_TABLE, TeacherClient, label_sources
from mmssr_core.testing.teacher_testserver import TeacherTestServer


def _label(store, sources, size, taxonomy, **kw):
    with TeacherTestServer(taxonomy=taxonomy, **kw) as srv:
        client = TeacherClient.from_urls([srv.url], taxonomy, model=srv.model, max_retries=1)
        try:
            return label_sources(store, sources, size, client)
        finally:
            client.close()


def _turn_pairs(records):
    """(record, human text, answer) of every exported conversation."""
    for rec in records:
        conv = rec["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"]
        yield rec, conv[0]["value"], conv[1]["value"]


def test_export_round_trips_into_the_scorers_prompts(store, shared_data, tmp_path):
    from mmssr_core.scorer_data import export_scorer_data

    tax = Taxonomy()
    write_pool(store, "mathv", shared_data, "mathv", n=12)
    write_pool(store, "llava_bench", shared_data, "llava_bench", n=6)
    text_only = [
        {"id": "txt1", "conversations": [{"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": "4"}]}
    ]
    write_pool(store, "tabmwp", shared_data, "tabmwp", n=4, extra=text_only)
    res = _label(store, ["mathv", "llava_bench", "tabmwp"], 100, tax)
    assert res.failed == 0 and res.sampled == 23
    out = tmp_path / "train" / "scorer.json"
    exp = export_scorer_data(store, out, taxonomy=tax)
    records = json.loads(out.read_text())
    assert exp.samples == 23 and len(records) == 23 * (len(tax.keys) + 1) == exp.conversations

    prompts = PromptSet.from_taxonomy(tax)
    query = dict(zip(prompts.capability_keys, prompts.capability_queries))
    labels = pl.concat([store.read(TEACHER_TABLE, s) for s in ("mathv", "llava_bench", "tabmwp")], how="vertical")
    label_of = {(r["source"], r["id"]): r for r in labels.iter_rows(named=True)}
    pool = pl.concat([store.read("raw_pool", s) for s in ("mathv", "llava_bench", "tabmwp")], how="vertical")
    row_of = {(r["source"], r["id"]): r for r in pool.iter_rows(named=True)}
    seen_targets = set()
    for rec, human, answer in _turn_pairs(records):
        key = (rec["source"], rec["sample_id"])
        row, lab = row_of[key], label_of[key]
        convs = [{"from": t["from"], "value": t["value"]} for t in row["conversations"]]
        target = rec["target"]
        seen_targets.add(target)
        q = prompts.style_query if target == "styles" else query[target]
        # byte-for-byte the scorer's user turn: PromptSet.prefix + query
        assert human.encode() == (prompts.prefix(convs) + q).encode()
        if target == "styles":
            assert answer == ", ".join(lab["styles"])
            assert human.endswith("Interaction style candidates: [" + ", ".join(tax.styles) + "]\nStyles: ")
        else:
            assert answer == str(lab[target]) and answer in "012345"
            assert human.endswith("in training a Multimodal Large Language Model for " + tax.phrase(target) + "?")
        if row["image_files"]:
            assert human.count(IMAGE_TOKEN) == 1
            img = (out.parent / rec["image"]).resolve()
            assert img == Path(row["image_files"][0]).resolve() and img.is_file()
            assert rec["images"] == [rec["image"]] and not Path(rec["image"]).is_absolute()
        else:
            assert "image" not in rec and IMAGE_TOKEN not in human
    assert seen_targets == set(tax.keys) | {"styles"}
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info["scorer"]["file_name"] == "scorer.json" and info["scorer"]["formatting"] == "sharegpt"


def test_export_matches_the_backends_user_text(store, shared_data, tmp_path):
    """The openai backend builds its user turn as prefix + query; the export must be the same text."""
    from mmssr_core.scorer_data import export_scorer_data
    from mmssr_core.scoring.base import ScoreRequest
    from mmssr_core.scoring.openai_backend import OpenAIBackend

    tax = Taxonomy()
    write_pool(store, "mathv", shared_data, "mathv", n=3)
    _label(store, ["mathv"], 3, tax)
    export_scorer_data(store, tmp_path / "s.json", taxonomy=tax, capabilities=["stem_knowledge"], styles=False)
    records = json.loads((tmp_path / "s.json").read_text())
    prompts = PromptSet.from_taxonomy(tax)
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")
    try:
        pool = store.read("raw_pool", "mathv")
        for rec in records:
            row = pool.filter(pl.col("id") == rec["sample_id"]).row(0, named=True)
            convs = tuple({"from": t["from"], "value": t["value"]} for t in row["conversations"])
            req = ScoreRequest(
                key="k", sample_id=row["id"], prefix=prompts.prefix(convs), image_file=None, conversations=convs
            )
            msgs = backend.messages(
                req, prompts.capability_queries[tax.keys.index("stem_knowledge")], "data:image/png;base64,AA"
            )
            parts = msgs[1]["content"]
            text = "".join(p["text"] if p["type"] == "text" else IMAGE_TOKEN for p in parts)
            assert rec["conversations"][0]["value"] == text
    finally:
        backend.close()


def test_failures_are_not_exported(store, shared_data, tmp_path):
    from mmssr_core.scorer_data import export_scorer_data

    tax = Taxonomy()
    write_pool(store, "mathv", shared_data, "mathv", n=6)
    with TeacherTestServer(taxonomy=tax) as srv:
        srv.inject("out_of_range", count=-1, when=lambda b: "How many different digits" in json.dumps(b["messages"][1]))
        client = TeacherClient.from_urls([srv.url], tax, model=srv.model, max_retries=1, max_attempts=2)
        try:
            res = label_sources(store, ["mathv"], 6, client)
        finally:
            client.close()
    assert res.failed == 1
    exp = export_scorer_data(store, tmp_path / "s.json", taxonomy=tax)
    assert exp.samples == 5 and exp.skipped_failed == 1
    assert "mathv_testmini_4" not in {r["sample_id"] for r in json.loads((tmp_path / "s.json").read_text())}


def test_cli_export(store, shared_data, tmp_path, capsys):
    from mmssr_core.cli import main

    write_pool(store, "mathv", shared_data, "mathv", n=4)
    _label(store, ["mathv"], 4, Taxonomy())
    rc = main(
        [
            "export-scorer-data",
            "--store",
            str(store.root),
            "--out",
            str(tmp_path / "o.json"),
            "--capability",
            "stem_knowledge",
            "--capability",
            "data_understanding",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["per_target"] == {"stem_knowledge": 4, "data_understanding": 4, "styles": 4}
    rc = main(
        ["export-scorer-data", "--store", str(store.root), "--out", str(tmp_path / "o.json"), "--capability", "nope"]
    )
    assert rc == 2 and "unknown capabilities" in capsys.readouterr().err


@pytest.mark.slow
def test_new_capability_flows_end_to_end(store, shared_data, tmp_path, monkeypatch, capsys):
    """A 15th capability in $MMSSR_TAXONOMY: label -> export -> score -> scores table -> select -> agreement."""
    from mmssr_core.cli import main
    from mmssr_core.selection import select

    cfg = tmp_path / "taxonomy.toml"
    cfg.write_text('[[capabilities]]\nkey = "chart_reasoning"\nphrase = "chart reasoning"\n')
    monkeypatch.setenv("MMSSR_TAXONOMY", str(cfg))
    tax = load_taxonomy()
    assert len(tax.keys) == 15 and tax.keys[-1] == "chart_reasoning"
    write_pool(store, "tabmwp", shared_data, "tabmwp", n=20)
    write_pool(store, "mathv", shared_data, "mathv", n=10)
    root = str(store.root)

    with TeacherTestServer(taxonomy=Taxonomy()) as srv:  # the server learns the keys from the json_schema
        assert (
            main(
                [
                    "label",
                    "--store",
                    root,
                    "--size",
                    "30",
                    "--base-url",
                    srv.url,
                    "--model",
                    srv.model,
                    "--json",
                    "--no-progress",
                ]
            )
            == 0
        )
        sent = srv.teacher_requests()[0]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sampled"] == 30 and summary["failed"] == 0
    assert "chart_reasoning" in sent["response_format"]["json_schema"]["schema"]["properties"]["scores"]["required"]
    assert "- chart_reasoning: chart reasoning" in sent["messages"][1]["content"][-1]["text"]
    labels = store.read(TEACHER_TABLE, "tabmwp")
    assert labels.schema["chart_reasoning"] == pl.Int8 and labels["chart_reasoning"].null_count() == 0

    out = tmp_path / "export" / "scorer.json"
    assert main(["export-scorer-data", "--store", root, "--out", str(out), "--json"]) == 0
    exp = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exp["per_target"]["chart_reasoning"] == 30 and len(exp["per_target"]) == 16
    recs = [r for r in json.loads(out.read_text()) if r["target"] == "chart_reasoning"]
    assert recs[0]["conversations"][0]["value"].endswith(
        "how do you rate the helpfulness of the VQA instance in training a Multimodal Large Language Model for chart reasoning?"
    )

    assert main(["score", "--store", root, "--backend", "rules", "--no-progress"]) == 0
    scores_file = tmp_path / "scores.parquet"
    assert main(["scores", "--store", root, "--out", str(scores_file)]) == 0
    capsys.readouterr()
    scores = pl.read_parquet(scores_file)
    assert scores["chart_reasoning"].null_count() == 0
    picked = select(scores, [10], capabilities=["chart_reasoning"], taxonomy=tax)
    sel = next(iter(picked.values()))
    assert sel.selected == 10 and set(sel.frame["picked_by"].to_list()) == {"chart_reasoning"}
    chosen = scores.join(sel.frame.select("id", "source"), on=["id", "source"])
    assert chosen["chart_reasoning"].mean() > scores["chart_reasoning"].mean()  # ranked by the new capability

    assert (
        main(["agreement", "--store", root, "--scores", str(scores_file), "--out", str(tmp_path / "agr"), "--json"])
        == 0
    )
    agr = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    keys = [c["key"] for c in agr["capabilities"]]
    assert keys == tax.keys and agr["n_matched"] == 30
    assert next(c for c in agr["capabilities"] if c["key"] == "chart_reasoning")["n"] == 30
