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

Modules: `prompt` (what is asked, the identity), `answer` (validation), `client` (the requests),
`cache` (answers per content and teacher), `sampling` (the stratified sample), `table` (the per-source
table), `run` (`label_sources`).
"""

from mmssr_core.schema import TEACHER_CACHE_TABLE, TEACHER_TABLE
from mmssr_core.teacher.answer import (
    FAILURE_REASONS,
    VALIDATION_REASONS,
    TeacherAnswer,
    TeacherFailure,
    validate_answer,
)
from mmssr_core.teacher.cache import CACHE_SCHEMA, TeacherCache
from mmssr_core.teacher.client import (
    STRUCTURED_MODES,
    TeacherClient,
    TeacherRequest,
    encode_image,
    make_client,
)
from mmssr_core.teacher.prompt import (
    REASK_TEMPLATE,
    TEACHER_SYSTEM_PROMPT,
    TEACHER_TEMPLATE,
    TeacherIdentity,
    answer_schema,
    teacher_instruction,
    teacher_prompt_version,
)
from mmssr_core.teacher.run import LabelProgress, LabelRunResult, label_sources
from mmssr_core.teacher.sampling import (
    allocate,
    plan_sample,
    primary_styles,
    read_pools,
    stratified_sample,
)
from mmssr_core.teacher.table import (
    FAILURE_COLUMN,
    MESSAGE_COLUMN,
    TEACHER_COLUMN,
    build_teacher_table,
    teacher_labels_schema,
)

__all__ = [
    "CACHE_SCHEMA",
    "FAILURE_COLUMN",
    "FAILURE_REASONS",
    "MESSAGE_COLUMN",
    "REASK_TEMPLATE",
    "STRUCTURED_MODES",
    "TEACHER_CACHE_TABLE",
    "TEACHER_COLUMN",
    "TEACHER_SYSTEM_PROMPT",
    "TEACHER_TABLE",
    "TEACHER_TEMPLATE",
    "VALIDATION_REASONS",
    "LabelProgress",
    "LabelRunResult",
    "TeacherAnswer",
    "TeacherCache",
    "TeacherClient",
    "TeacherFailure",
    "TeacherIdentity",
    "TeacherRequest",
    "allocate",
    "answer_schema",
    "build_teacher_table",
    "encode_image",
    "label_sources",
    "make_client",
    "plan_sample",
    "primary_styles",
    "read_pools",
    "stratified_sample",
    "teacher_instruction",
    "teacher_labels_schema",
    "teacher_prompt_version",
    "validate_answer",
]
