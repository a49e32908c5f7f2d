"""Progress on stderr: a bar in place on a terminal, plain rate-limited lines otherwise, stdout untouched."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from mmssr_core.progress import Progress

REPO_ROOT = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_first_then_rate_limited_then_the_end_once():
    out = io.StringIO()
    bar = Progress("score tab", 100, stream=out, every=3600)
    for done in range(0, 101, 10):
        bar.update(done, skipped=20, note="20 cached")
    bar.update(100)  # the end again: not repeated
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("score tab: 0/100 (0.0%)") and "samples/s" in lines[0]
    assert lines[1].startswith("score tab: 100/100 (100.0%)") and "ETA 0s" in lines[1]
    assert "\r" not in out.getvalue()


def test_a_fraction_stands_for_the_share_when_the_total_is_not_a_count():
    out = io.StringIO()
    bar = Progress("ingest s", unit="records", stream=out, every=0)
    bar.update(500, fraction=0.25, note="480 accepted, 20 quarantined")
    assert out.getvalue().startswith("ingest s: 500 (25.0%)") and "records/s" in out.getvalue()
    assert out.getvalue().rstrip().endswith("; 480 accepted, 20 quarantined")


def test_terminal_bar_is_redrawn_in_place_and_ends_with_a_newline():
    term = Terminal()
    bar = Progress("label", 4, stream=term)
    bar.update(0)
    bar.message("a line of its own")
    bar.update(4)
    bar.close()
    text = term.getvalue()
    assert "\r\x1b[2K" in text and text.endswith("\n")
    assert "| 100% 4/4" in text and "|" + "#" * 24 + "|" in text
    assert "a line of its own\n" in text
    assert text.count("\n") == 2  # the message and the closing newline: the bar never scrolls


def test_disabled_and_short_tasks_are_silent():
    out = Terminal()
    Progress("x", 3, stream=out, enabled=False).update(3)
    quick = Progress("y", 3, stream=out, delay=60)
    quick.update(1)
    quick.update(3)
    quick.close()
    assert out.getvalue() == ""


def _run_with_terminal_stderr(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run `python -m mmssr_core.cli ARGS` with stderr on a pseudo-terminal and stdout on a pipe."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmssr_core.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read()
    rc = proc.wait(timeout=120)
    os.close(master)
    return rc, stdout, b"".join(chunks).decode(errors="replace")


def test_score_draws_a_bar_on_a_terminal_and_json_stays_the_last_stdout_line(tmp_path):
    pool = tmp_path / "pool.jsonl"
    rows = [
        {
            "id": str(i),
            "conversations": [{"from": "human", "value": f"What is {i} + {i}?"}, {"from": "gpt", "value": str(2 * i)}],
        }
        for i in range(30)
    ]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "store"
    rc, _, _ = _run_with_terminal_stderr(["ingest", str(pool), "--source", "maths", "--store", str(store)], tmp_path)
    assert rc == 0
    rc, stdout, stderr = _run_with_terminal_stderr(
        ["score", "--store", str(store), "--backend", "rules", "--json"], tmp_path
    )
    assert rc == 0, stderr
    assert "score maths |" in stderr and "| 100% 30/30" in stderr and "\r" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["scored"] == 30 and "\r" not in stdout
