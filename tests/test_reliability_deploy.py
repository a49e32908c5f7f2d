"""Safe deployment defaults: no exposed UI, no password in a file, the chart told to use your secret."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def test_k8s_values_require_an_existing_postgres_secret():
    text = (REPO / "deploy/k8s/values.yaml").read_text()
    values = yaml.safe_load(text)
    assert values["generatePostgresqlPasswordSecret"] is False
    pg = values["postgresql"]
    assert "postgresqlPassword" not in pg and "CHANGE_ME" not in text
    assert pg["existingSecret"] == values["global"]["postgresqlSecretName"]
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"


def test_the_scale_out_runbook_binds_every_service_privately():
    doc = (REPO / "docs/scale-out.md").read_text()
    commands = "\n".join(_code_blocks(doc))
    assert "0.0.0.0" not in commands
    for line in commands.splitlines():
        if re.match(r"\s*(dagster-webserver|dagster dev)\b", line):  # a command, not the picture
            assert "-h 127.0.0.1" in line, line
        if line.startswith("redis-server"):
            assert "--requirepass" in line and "--protected-mode yes" in line, line
    assert "authenticat" in doc and "port-forward" in doc
    for block in _code_blocks(doc):  # no literal secret in a command a user copies
        assert not re.search(r"(PASSWORD|password)=(?![\"$.])\w", block), block
