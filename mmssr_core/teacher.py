"""Teacher labels: a strong model rates a stratified sample on every capability and names its styles.

Why: the released scorer and styler were distilled from such labels (GPT-4o in the paper). The same loop
lets a user check how far any scorer agrees with a strong judge on their data (`mmssr agreement`) and
produce training data for a scorer that knows a new capability (`mmssr export-scorer-data`).

Flow of `label_sources`:
1. Sample: distinct samples (by content_hash) of the chosen sources, stratified by (source, primary
   style). Styles come from the `style_labels` table where a scorer already wrote it, else from the
   weight-free rules styler. Every stratum gets one sample when the size allows, the rest is allocated
   proportionally to what each stratum has left (largest remainders); within a stratum samples are
   ordered by a seeded hash of their content, so a larger size with the same seed extends a smaller one.
2. Ask: one chat completion per sample through the `openai` backend's transport (replicas, retries,
   backoff, API key from an environment variable). The answer must be one JSON object
   `{"scores": {<key>: 0..5, ...}, "styles": [<label>, ...]}`; it is constrained with
   `response_format: {"type": "json_schema", ...}` where the server accepts it (vLLM, OpenAI), else
   `{"type": "json_object"}`, else the instruction alone (a 400 naming the parameter steps down, and is
   remembered).
3. Validate, re-ask: every key present, integers 0..5, styles non-empty and within the label set. An
   invalid answer is re-asked with the reason (bounded), then recorded as a failure with a reason code
   (FAILURE_REASONS); transport failures keep the backend's reason (timeout, http_5xx, ...).
4. Store: answers go to a chunked, append-only cache keyed by (content_hash, teacher identity): a kill
   loses at most the unflushed chunk and the next run asks only what is missing. Then the
   `teacher_labels/<source>` table is derived from the cache (every sample of the source this teacher
   has answered, failures included with their reason).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl

from mmssr_core.chunk_cache import ChunkCache, Flusher
from mmssr_core.prompts import IMAGE_TOKEN, PromptSet, serialise_conversation
from mmssr_core.schema import RAW_POOL_TABLE, STYLE_TABLE, TEACHER_CACHE_TABLE, TEACHER_TABLE
from mmssr_core.store import Store, StoreError
from mmssr_core.taxonomy import Taxonomy, load_taxonomy

TEACHER_COLUMN = "teacher"
FAILURE_COLUMN = "failure"
MESSAGE_COLUMN = "failure_message"

# Validation failures (the teacher answered, but not usably) and what they mean.
FAILURE_REASONS: dict[str, str] = {
    "malformed_json": "the answer is not one JSON object",
    "partial_answer": "a capability score or the styles are missing (or styles are empty)",
    "out_of_range": "a score is not an integer from 0 to 5",
    "unknown_style": "a style is not in the taxonomy's label set",
    "empty_answer": "the answer has no text (no choices[0].message.content)",
}
VALIDATION_REASONS = frozenset(FAILURE_REASONS)

TEACHER_SYSTEM_PROMPT = (
    "You are an expert annotator of training data for multimodal large language models. "
    "You answer with JSON only."
)
TEACHER_TEMPLATE = """You are given one visual question answering (VQA) instance used to train a Multimodal Large Language Model (MLLM){image_note}.

Rate, for each capability below, on a scale of 0 to 5 (integers only), how helpful the instance is in training an MLLM for that capability (0: useless for it, 5: very helpful).
Capabilities (key: capability):
{capabilities}

Then name the instance's interaction styles, the form of its questions and answers. Choose only from these labels, list every one that applies, the most prominent first:
[{styles}]

Answer with one JSON object and nothing else, in exactly this form:
{template}

The instance:
{conversation}"""

REASK_TEMPLATE = (
    "Your answer cannot be used: {detail}. Answer again with one JSON object only: every capability key "
    "with an integer from 0 to 5 under \"scores\", and \"styles\" as a non-empty list of labels taken "
    "from the list above."
)

STRUCTURED_MODES = ("auto", "json_schema", "json_object", "none")


# -- identity and prompts --------------------------------------------------------------------
def teacher_prompt_version(taxonomy: Taxonomy) -> str:
    """Changes whenever the teacher's instruction, system prompt, capabilities or labels change."""
    blob = json.dumps(
        {
            "system": TEACHER_SYSTEM_PROMPT,
            "template": TEACHER_TEMPLATE,
            "reask": REASK_TEMPLATE,
            "taxonomy": taxonomy.to_dict(),
            "serialisation": PromptSet.from_taxonomy(taxonomy).version,
        },
        sort_keys=True,
    )
    return "t1-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TeacherIdentity:
    """Who labelled: the served model, the server's host (not its port or replica), the prompt version."""

    model: str
    host: str
    prompt_version: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def label(self) -> str:
        """Stored in the `teacher` column."""
        return f"{self.model}@{self.host}/{self.prompt_version}"


def answer_schema(taxonomy: Taxonomy) -> dict:
    """The JSON schema of a teacher answer (sent as response_format json_schema)."""
    keys = taxonomy.keys
    return {
        "type": "object",
        "properties": {
            "scores": {
                "type": "object",
                "properties": {k: {"type": "integer", "minimum": 0, "maximum": 5} for k in keys},
                "required": list(keys),
                "additionalProperties": False,
            },
            "styles": {
                "type": "array",
                "items": {"type": "string", "enum": list(taxonomy.styles)},
                "minItems": 1,
            },
        },
        "required": ["scores", "styles"],
        "additionalProperties": False,
    }


def teacher_instruction(taxonomy: Taxonomy, conversations: Sequence[dict], has_image: bool) -> str:
    """The user text of a teacher request (the image, if any, is sent as a separate part before it)."""
    caps = "\n".join(f"- {c.key}: {c.phrase}" for c in taxonomy.capabilities)
    template = json.dumps({"scores": {k: "<0-5>" for k in taxonomy.keys}, "styles": ["<label>", "..."]})
    convo = serialise_conversation(conversations, max_images=0 if not has_image else 1)
    convo = convo.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "")
    return TEACHER_TEMPLATE.format(
        image_note=" with the image shown above" if has_image else " (text only, no image)",
        capabilities=caps,
        styles=", ".join(taxonomy.styles),
        template=template,
        conversation=convo,
    )


# -- validation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherAnswer:
    scores: dict[str, int]
    styles: list[str]


@dataclass(frozen=True)
class TeacherFailure:
    reason: str
    message: str = ""

    def __bool__(self) -> bool:
        return False


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def _parse_json_object(text: str) -> dict | None:
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        obj = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            obj = json.loads(text[start : end + 1])
        except ValueError:
            return None
    return obj if isinstance(obj, dict) else None


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
        return int(v)
    return None


def validate_answer(text: str | None, taxonomy: Taxonomy) -> TeacherAnswer | TeacherFailure:
    """Parse and check one teacher answer; the failure names the first problem class and every detail."""
    if text is None or not str(text).strip():
        return TeacherFailure("empty_answer", "the answer has no text")
    obj = _parse_json_object(str(text))
    if obj is None:
        return TeacherFailure("malformed_json", f"not one JSON object: {str(text)[:120]!r}")
    scores_obj = obj.get("scores")
    if not isinstance(scores_obj, dict):  # tolerate a flat object {key: n, ..., "styles": [...]}
        scores_obj = {k: obj[k] for k in taxonomy.keys if k in obj}
    missing = [k for k in taxonomy.keys if k not in scores_obj or scores_obj[k] is None]
    raw_styles = obj.get("styles")
    if isinstance(raw_styles, str):
        raw_styles = [s.strip() for s in raw_styles.split(",") if s.strip()]
    if missing or not isinstance(raw_styles, list) or not raw_styles:
        what = []
        if missing:
            what.append(f"scores missing for {missing}")
        if not isinstance(raw_styles, list) or not raw_styles:
            what.append("no styles")
        return TeacherFailure("partial_answer", "; ".join(what))
    scores: dict[str, int] = {}
    bad = []
    for k in taxonomy.keys:
        n = _as_int(scores_obj[k])
        if n is None or not 0 <= n <= 5:
            bad.append(f"{k}={scores_obj[k]!r}")
        else:
            scores[k] = n
    if bad:
        return TeacherFailure("out_of_range", f"scores must be integers 0..5: {', '.join(bad)}")
    canon = {s.lower(): s for s in taxonomy.styles}
    styles: list[str] = []
    unknown = []
    for s in raw_styles:
        label = canon.get(str(s).strip().lower()) if isinstance(s, str) else None
        if label is None:
            unknown.append(s)
        elif label not in styles:
            styles.append(label)
    if unknown:
        return TeacherFailure("unknown_style", f"labels not in the style set: {unknown!r:.200}")
    return TeacherAnswer(scores, styles)


# -- the teacher client ----------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherRequest:
    content_hash: str
    sample_id: str
    source: str
    conversations: tuple[dict, ...]
    image_file: str | None


def encode_image(path: str, max_side: int = 1024) -> str:
    """The teacher sees the image at up to `max_side` pixels on the long side (aspect kept), as JPEG."""
    from PIL import Image

    from mmssr_core.image_prep import open_rgb

    im = open_rgb(path, target=(max_side, max_side))
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class TeacherClient:
    """Asks one structured question per sample through an OpenAIBackend's transport.

    The backend brings replicas, per-replica concurrency, retries with backoff on 429/5xx/timeouts and
    the API key from its environment variable; this class adds the teacher's request, the validation and
    the re-asks.
    """

    def __init__(
        self,
        backend: Any,
        taxonomy: Taxonomy,
        *,
        structured: str = "auto",
        max_attempts: int = 3,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        image_max_side: int = 1024,
    ):
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {STRUCTURED_MODES}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.backend = backend
        self.taxonomy = taxonomy
        self.structured = structured
        self._mode = "json_schema" if structured == "auto" else structured
        self.max_attempts = int(max_attempts)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.image_max_side = int(image_max_side)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "reasks": 0, "downgrades": 0}

    @classmethod
    def from_urls(cls, base_urls: Sequence[str], taxonomy: Taxonomy, *, model: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4, timeout: float = 120.0,
                  max_retries: int = 5, **kwargs: Any) -> "TeacherClient":
        from mmssr_core.scoring.openai_backend import OpenAIBackend

        backend = OpenAIBackend(model=model, base_urls=list(base_urls), api_key_env=api_key_env,
                                concurrency=concurrency, timeout=timeout, max_retries=max_retries)
        return cls(backend, taxonomy, **kwargs)

    # -- identity ------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.backend.resolve_model()

    def identity(self) -> TeacherIdentity:
        host = self.backend.replica_hosts[0]
        return TeacherIdentity(
            model=self.model,
            host=host,
            prompt_version=teacher_prompt_version(self.taxonomy),
            extra=(("image_max_side", str(self.image_max_side)), ("temperature", repr(self.temperature))),
        )

    @property
    def concurrency(self) -> int:
        return self.backend.total_concurrency

    # -- payload -------------------------------------------------------------------------------
    def messages(self, req: TeacherRequest, image_url: str | None) -> list[dict]:
        text = teacher_instruction(self.taxonomy, req.conversations, image_url is not None)
        content: list[dict] = []
        if image_url is not None:
            content.append({"type": "image_url", "image_url": {"url": image_url}})
        content.append({"type": "text", "text": text})
        return [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def payload(self, messages: list[dict]) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        with self._lock:
            mode = self._mode
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "teacher_labels", "schema": answer_schema(self.taxonomy), "strict": True},
            }
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    @staticmethod
    def _sent_mode(body: dict) -> str:
        rf = body.get("response_format")
        return rf["type"] if rf else "none"

    def _downgrade(self, body: dict, message: str) -> bool:
        """A 400 about response_format: step json_schema -> json_object -> none (only in auto mode).
        Relative to the mode that request carried, so concurrent requests step down only once."""
        if self.structured != "auto":
            return False
        low = message.lower()
        if not any(w in low for w in ("response_format", "json_schema", "json_object", "structured", "guided")):
            return False
        sent = self._sent_mode(body)
        with self._lock:
            if sent == "none":
                return False
            if self._mode != sent:  # another request already stepped down: just send again
                return True
            self._mode = {"json_schema": "json_object", "json_object": "none"}[sent]
            self.stats["downgrades"] += 1
        return True

    def _post(self, body: dict) -> dict | TeacherFailure | tuple[int, str]:
        """One chat completion through the backend's retrying transport."""
        from mmssr_core.scoring.base import Failure
        from mmssr_core.scoring.openai_backend import BadStatus, Malformed

        with self._lock:
            self.stats["requests"] += 1
        res = self.backend.post_chat(body)
        if isinstance(res, Failure):
            return TeacherFailure(res.reason, res.message)
        if isinstance(res, BadStatus):
            return (res.status, res.message)
        if isinstance(res, Malformed):
            return TeacherFailure("malformed_response", res.message)
        return res

    def label(self, req: TeacherRequest) -> tuple[TeacherAnswer | TeacherFailure, int]:
        """(answer or failure, number of asks) for one sample; never raises for a bad sample."""
        image_url = None
        if req.image_file:
            try:
                image_url = encode_image(req.image_file, self.image_max_side)
            except Exception as exc:  # noqa: BLE001 - the sample's own problem
                return TeacherFailure("image_error", f"sample {req.sample_id!r}: cannot read {req.image_file}: {exc}"), 0
        messages = self.messages(req, image_url)
        asks = 0
        downgrades = 0
        last: TeacherFailure = TeacherFailure("not_asked", "")
        while asks < self.max_attempts:
            body = self.payload(messages)
            res = self._post(body)
            if isinstance(res, TeacherFailure):
                if res.reason == "malformed_response":
                    asks += 1
                    last = TeacherFailure("malformed_json", res.message)
                    continue
                return res, asks + 1
            if isinstance(res, tuple):
                status, message = res
                if status == 400 and downgrades < 2 and self._downgrade(body, message):
                    downgrades += 1
                    continue
                reason = "http_401" if status in (401, 403) else f"http_{status}"
                return TeacherFailure(reason, f"HTTP {status}: {message}"[:500]), asks + 1
            asks += 1
            try:
                text = res["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
            out = validate_answer(text, self.taxonomy)
            if isinstance(out, TeacherAnswer):
                return out, asks
            last = out
            if asks < self.max_attempts:
                with self._lock:
                    self.stats["reasks"] += 1
                messages = messages[:2] + [
                    {"role": "assistant", "content": (text or "")[:4000]},
                    {"role": "user", "content": REASK_TEMPLATE.format(detail=f"{out.reason}: {out.message}")},
                ]
        return TeacherFailure(last.reason, f"{last.message} (asked {asks} times)"[:500]), asks

    def close(self) -> None:
        self.backend.close()


# -- the label cache -------------------------------------------------------------------------
CACHE_SCHEMA: dict[str, pl.DataType] = {
    "content_hash": pl.Utf8,
    "answer": pl.Utf8,  # JSON {"scores": {...}, "styles": [...]} on success, else null
    "reason": pl.Utf8,  # failure code (null on success)
    "message": pl.Utf8,
    "asks": pl.Int32,
    "written_at": pl.Float64,
}


class TeacherCache(ChunkCache):
    """Append-only chunks `<store>/teacher_cache/<identity digest>/<uuid>.parquet` (mmssr_core.chunk_cache)."""

    schema = CACHE_SCHEMA

    def __init__(self, store: Store, identity: TeacherIdentity):
        body = dict(asdict(identity), digest=identity.digest, label=identity.label())
        super().__init__(store, TEACHER_CACHE_TABLE, identity.digest, body)
        self.identity = identity

    def append(self, rows: Sequence[dict]) -> Path | None:
        if not rows:
            return None
        now = time.time()
        recs = [
            {
                "content_hash": r["content_hash"],
                "answer": r.get("answer"),
                "reason": r.get("reason"),
                "message": r.get("message"),
                "asks": r.get("asks"),
                "written_at": now,
            }
            for r in rows
        ]
        return self.append_frame(pl.DataFrame(recs, schema=CACHE_SCHEMA))

    def resolved(self) -> pl.DataFrame:
        """One row per content_hash: the latest success, else the latest failure."""
        rows = self.scan().collect()
        if rows.is_empty():
            return rows
        rows = rows.with_columns(_ok=pl.col("answer").is_not_null()).sort(["_ok", "written_at"], maintain_order=True)
        return rows.group_by("content_hash", maintain_order=True).last().drop("_ok")


# -- sampling --------------------------------------------------------------------------------
def _seeded_key(values: Sequence[str], seed: int) -> list[str]:
    s = f"{seed}\0".encode()
    return [hashlib.sha256(s + (v or "").encode()).hexdigest() for v in values]


def allocate(counts: dict[str, int], size: int, seed: int = 0) -> dict[str, int]:
    """Per-stratum quotas summing to min(size, total): proportional to stratum size (largest remainders),
    at least one per stratum where the size allows; ties broken by a seeded hash of the stratum name."""
    total = sum(counts.values())
    size = max(0, min(int(size), total))
    strata = sorted(counts)
    tie = dict(zip(strata, _seeded_key(strata, seed)))
    if size == 0:
        return {s: 0 for s in strata}
    if size < len(strata):  # not enough for one each: the largest strata get one
        ranked = sorted(strata, key=lambda s: (-counts[s], tie[s]))
        return {s: (1 if s in ranked[:size] else 0) for s in strata}
    exact = {s: size * counts[s] / total for s in strata}
    quota = {s: min(counts[s], max(1, int(exact[s]))) for s in strata}
    diff = size - sum(quota.values())
    if diff > 0:  # hand out the rest by largest remainder
        order = sorted(strata, key=lambda s: (-(exact[s] - quota[s]), tie[s]))
        while diff > 0:
            for s in order:
                if diff > 0 and quota[s] < counts[s]:
                    quota[s] += 1
                    diff -= 1
    elif diff < 0:  # the forced ones overshot: take back where the quota exceeds its share most
        order = sorted(strata, key=lambda s: (-(quota[s] - exact[s]), tie[s]))
        while diff < 0:
            for s in order:
                if diff < 0 and quota[s] > 1:
                    quota[s] -= 1
                    diff += 1
    return quota


def stratified_sample(frame: pl.DataFrame, size: int, seed: int = 0, stratum: str = "stratum") -> pl.DataFrame:
    """`size` rows of `frame` (distinct content_hash), allocated over `stratum` by `allocate`."""
    if frame.is_empty() or size <= 0:
        return frame.head(0)
    counts = dict(frame.group_by(stratum).len().iter_rows())
    quota = allocate(counts, size, seed)
    keyed = frame.with_columns(_k=pl.Series(_seeded_key(frame["content_hash"].to_list(), seed), dtype=pl.Utf8))
    keyed = keyed.sort([stratum, "_k"]).with_columns(_r=pl.int_range(pl.len()).over(stratum))
    q = pl.DataFrame({stratum: list(quota), "_q": list(quota.values())}, schema={stratum: pl.Utf8, "_q": pl.Int64})
    out = keyed.join(q, on=stratum, how="left").filter(pl.col("_r") < pl.col("_q"))
    return out.drop("_k", "_r", "_q").sort([stratum, "content_hash"])


def primary_styles(store: Store, pool: pl.DataFrame, taxonomy: Taxonomy) -> pl.Series:
    """The first style label of each pool row: from `style_labels` where present, else the rules styler."""
    prim = pl.Series("primary", [None] * pool.height, dtype=pl.Utf8)
    known = pool.select("source", "id").with_row_index("_i")
    parts = []
    for source in pool["source"].unique().to_list():
        if store.exists(STYLE_TABLE, source):
            st = store.read(STYLE_TABLE, source)
            if "styles" in st.columns:
                parts.append(st.select("source", "id", pl.col("styles").list.first().alias("primary")))
    if parts:
        lab = known.join(pl.concat(parts, how="vertical_relaxed").unique(["source", "id"]), on=["source", "id"], how="left")
        prim = lab.sort("_i")["primary"].cast(pl.Utf8)
    missing = [i for i, v in enumerate(prim.to_list()) if v is None]
    if missing:
        from mmssr_core.scoring.base import ScoreRequest
        from mmssr_core.scoring.rules import RulesBackend

        rules = RulesBackend()
        prompts = PromptSet.from_taxonomy(taxonomy)
        rows = pool[missing]
        reqs = [
            ScoreRequest(key=r["content_hash"], sample_id=r["id"], prefix="", image_file=None,
                         conversations=tuple({"from": t["from"], "value": t["value"]} for t in (r["conversations"] or [])))
            for r in rows.iter_rows(named=True)
        ]
        guessed = rules.styles(reqs, prompts)
        vals = prim.to_list()
        for i, g in zip(missing, guessed):
            vals[i] = g[0] if isinstance(g, list) and g else "unlabelled"
        prim = pl.Series("primary", vals, dtype=pl.Utf8)
    return prim


# -- the run ---------------------------------------------------------------------------------
def teacher_labels_schema(keys: Sequence[str]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"id": pl.Utf8, "source": pl.Utf8, "content_hash": pl.Utf8}
    schema.update({k: pl.Int8 for k in keys})
    schema["styles"] = pl.List(pl.Utf8)
    schema[TEACHER_COLUMN] = pl.Utf8
    schema[FAILURE_COLUMN] = pl.Utf8
    schema[MESSAGE_COLUMN] = pl.Utf8
    return schema


@dataclass
class LabelProgress:
    done: int  # samples answered (or failed) so far in this run, cached ones included
    total: int  # samples in the stratified sample
    cached: int
    seconds: float


@dataclass
class LabelRunResult:
    sources: list[str]
    sampled: int  # distinct samples in the stratified sample
    labelled: int  # answered in this run (valid)
    cached: int  # valid in the cache before this run
    failed: int  # sampled samples without a valid label after this run
    asks: int  # chat completions that got an answer in this run (re-asks included)
    seconds: float
    teacher: str
    digest: str
    prompt_version: str
    strata: dict[str, int] = field(default_factory=dict)  # stratum -> sampled
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)  # source -> path

    def to_dict(self) -> dict:
        return asdict(self)


def _read_pools(store: Store, sources: Sequence[str]) -> pl.DataFrame:
    cols = ["id", "source", "content_hash", "image_files", "conversations"]
    frames = []
    for s in sources:
        try:
            df = store.read(RAW_POOL_TABLE, s)
        except StoreError:
            raise StoreError(f"source {s!r} has not been ingested (no raw_pool/{s} under {store.root})") from None
        lacking = [c for c in cols if c not in df.columns]
        if lacking:
            raise StoreError(f"raw_pool/{s} lacks columns {lacking}")
        df = df.select(cols)
        if df["content_hash"].null_count():
            df = df.with_columns(
                pl.when(pl.col("content_hash").is_null())
                .then(pl.lit("nohash-") + pl.col("source") + pl.lit("/") + pl.col("id"))
                .otherwise(pl.col("content_hash"))
                .alias("content_hash")
            )
        frames.append(df)
    if not frames:
        raise StoreError("no source to label")
    return pl.concat(frames, how="vertical_relaxed")


def plan_sample(store: Store, sources: Sequence[str], size: int, seed: int, taxonomy: Taxonomy) -> pl.DataFrame:
    """The stratified sample: distinct content of the sources, with its `stratum` (source+primary style)."""
    pool = _read_pools(store, sources)
    uniq = pool.unique("content_hash", keep="first", maintain_order=True)
    prim = primary_styles(store, uniq, taxonomy)
    uniq = uniq.with_columns(prim.alias("primary_style")).with_columns(
        (pl.col("source") + pl.lit("+") + pl.col("primary_style")).alias("stratum")
    )
    return stratified_sample(uniq, size, seed)


def label_sources(
    store: Store,
    sources: Sequence[str],
    size: int,
    client: TeacherClient,
    *,
    seed: int = 0,
    chunk_size: int = 32,
    retry_failures: bool = False,
    progress: Callable[[LabelProgress], None] | None = None,
    flush_seconds: float | None = None,
) -> LabelRunResult:
    """Label a stratified sample of `sources` with the teacher; resumable (see the module docstring).

    Answers go to the cache every `chunk_size` samples and at least every `flush_seconds` (default
    $MMSSR_FLUSH_SECONDS or 15 s)."""
    t0 = time.monotonic()
    taxonomy = client.taxonomy
    if size < 1:
        raise ValueError("size must be >= 1")
    sample = plan_sample(store, sources, size, seed, taxonomy)
    identity = client.identity()
    cache = TeacherCache(store, identity)
    before = cache.resolved()
    ok_before = set(before.filter(pl.col("answer").is_not_null())["content_hash"].to_list())
    # a validation failure is the teacher's answer (kept unless asked to retry); transport failures retry
    settled = set(ok_before)
    if not retry_failures:
        settled |= set(before.filter(pl.col("reason").is_in(list(VALIDATION_REASONS)))["content_hash"].to_list())
    todo = [r for r in sample.iter_rows(named=True) if r["content_hash"] not in settled]
    cached = sample.height - len(todo)
    n_cached_ok = sum(1 for h in sample["content_hash"].to_list() if h in ok_before)

    def report(done: int) -> None:
        if progress is not None:
            progress(LabelProgress(cached + done, sample.height, cached, time.monotonic() - t0))

    report(0)
    asks = 0
    labelled = 0
    done = 0
    workers = max(1, client.concurrency)
    pending: list[dict] = []

    def one(row: dict) -> tuple[dict, Any, int]:
        files = row["image_files"] or []
        req = TeacherRequest(
            content_hash=row["content_hash"], sample_id=row["id"], source=row["source"],
            conversations=tuple({"from": t["from"], "value": t["value"]} for t in (row["conversations"] or [])),
            image_file=files[0] if files else None,
        )
        try:
            out, n = client.label(req)
        except Exception as exc:  # noqa: BLE001 - one sample never stops the run
            out, n = TeacherFailure("teacher_error", f"sample {row['id']!r}: {type(exc).__name__}: {exc}"[:500]), 0
        return row, out, n

    flusher = Flusher(chunk_size, flush_seconds)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmssr-teacher") as pool:
        try:
            for c0 in range(0, len(todo), chunk_size):
                chunk = todo[c0 : c0 + chunk_size]
                for row, out, n in pool.map(one, chunk):
                    asks += n
                    if isinstance(out, TeacherAnswer):
                        labelled += 1
                        pending.append({"content_hash": row["content_hash"], "asks": n,
                                        "answer": json.dumps({"scores": out.scores, "styles": out.styles})})
                    else:
                        pending.append({"content_hash": row["content_hash"], "asks": n,
                                        "reason": out.reason, "message": f"sample {row['id']!r}: {out.message}"[:500]})
                    if flusher.due(len(pending)):  # by count or by time: a kill loses seconds, not a chunk
                        cache.append(pending)
                        pending.clear()
                        flusher.flushed()
                done += len(chunk)
                report(done)
        finally:
            cache.append(pending)  # an interrupt keeps what was answered

    resolved = cache.resolved()
    frames = {source: build_teacher_table(store, source, resolved, identity, taxonomy) for source in sources}
    tables = {source: str(store.path(TEACHER_TABLE, source)) for source in sources}
    sampled = sample.select("content_hash").join(resolved, on="content_hash", how="left")
    failed = sampled.filter(pl.col("answer").is_null())
    reasons = failed["reason"].fill_null("not_labelled").value_counts()
    result = LabelRunResult(
        sources=list(sources),
        sampled=sample.height,
        labelled=labelled,
        cached=n_cached_ok,
        failed=failed.height,
        asks=asks,
        seconds=round(time.monotonic() - t0, 3),
        teacher=identity.label(),
        digest=identity.digest,
        prompt_version=identity.prompt_version,
        strata=dict(sorted(sample.group_by("stratum").len().iter_rows())),
        failures_by_reason={r["reason"]: int(r["count"]) for r in reasons.iter_rows(named=True)},
        tables=tables,
    )
    meta = {"identity": asdict(identity), "label": identity.label(), "digest": identity.digest,
            "seed": seed, "size": size, "result": result.to_dict()}
    for source in sources:
        with store.transaction("teacher", source) as tx:  # the table and its summary land together
            tx.write(TEACHER_TABLE, frames[source])
            tx.write_json(TEACHER_TABLE, meta)
    report(len(todo))
    return result


def build_teacher_table(
    store: Store, source: str, resolved: pl.DataFrame, identity: TeacherIdentity, taxonomy: Taxonomy
) -> pl.DataFrame:
    """Every sample of `source` whose content this teacher answered (or failed on), one row per id."""
    keys = taxonomy.keys
    schema = teacher_labels_schema(keys)
    pool = _read_pools(store, [source]).select("id", "source", "content_hash")
    rows = pool.join(resolved, on="content_hash", how="inner")
    records = []
    for r in rows.iter_rows(named=True):
        rec: dict[str, Any] = {"id": r["id"], "source": r["source"], "content_hash": r["content_hash"]}
        if r["answer"] is not None:
            ans = json.loads(r["answer"])
            rec.update({k: ans["scores"].get(k) for k in keys})
            rec["styles"] = ans["styles"]
            rec[FAILURE_COLUMN] = None
            rec[MESSAGE_COLUMN] = None
        else:
            rec.update({k: None for k in keys})
            rec["styles"] = None
            rec[FAILURE_COLUMN] = r["reason"] or "unknown"
            rec[MESSAGE_COLUMN] = r["message"]
        rec[TEACHER_COLUMN] = identity.label()
        records.append(rec)
    return pl.DataFrame(records, schema=schema) if records else pl.DataFrame(schema=schema)


def make_client(base_urls: Sequence[str], model: str | None, taxonomy: Taxonomy | None = None, **kwargs: Any) -> TeacherClient:
    return TeacherClient.from_urls(base_urls, taxonomy or load_taxonomy(), model=model, **kwargs)
