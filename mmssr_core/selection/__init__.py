"""The mmSSR selection rule, exact and fast on millions of rows.

The rule in short (docs/selection.md says it in full): capabilities take turns, round after round, each
taking its share of what is still missing from its own ranking of the samples nobody has taken; a take is
balanced over style x source bins; a sample qualifies for a capability when its integer score is above the
threshold, and candidates rank by integer score, then expected score, then a seeded hash of the id.

Modules, one concept each:
- budget: budget syntax and its size (`parse_budget`, `Budget`)
- rules: which score decides per capability, and the ranking key (`capability_rules`, `RANK_MODES`)
- tie_keys: the seeded id hash that orders what is still equal
- codes: dense codes of few-valued columns (sources, style lists)
- validate: checking a scores table (`validate_scores`, `prepare_table`)
- bins: style x source bin labels and the sample layout the engine reads bins through
- ranking: lazily ranked bin lists (partial sorts of only what a take consumes)
- engine: the round-robin over capabilities and the balanced take
- methods: the mmSSR rule and the baselines as engines
- result: the `Selection` each budget returns
- api: `select`
"""

from mmssr_core.selection.api import select
from mmssr_core.selection.bins import UNSTYLED, BinLayout, bin_labels
from mmssr_core.selection.budget import Budget, budget_key, parse_budget
from mmssr_core.selection.engine import Engine, RunResult
from mmssr_core.selection.errors import SelectionInputError
from mmssr_core.selection.methods import METHODS
from mmssr_core.selection.result import OUTPUT_SCHEMA, Selection
from mmssr_core.selection.rules import (
    DEFAULT_RANK,
    RANK_MODES,
    CapabilityRule,
    capability_rules,
    eligible_expr,
    rule_summary,
)
from mmssr_core.selection.tie_keys import tie_keys
from mmssr_core.selection.validate import normalise_styles, prepare_table, validate_scores

__all__ = [
    "select",
    "UNSTYLED",
    "BinLayout",
    "bin_labels",
    "Budget",
    "budget_key",
    "parse_budget",
    "Engine",
    "RunResult",
    "SelectionInputError",
    "METHODS",
    "OUTPUT_SCHEMA",
    "Selection",
    "DEFAULT_RANK",
    "RANK_MODES",
    "CapabilityRule",
    "capability_rules",
    "eligible_expr",
    "rule_summary",
    "tie_keys",
    "normalise_styles",
    "prepare_table",
    "validate_scores",
]
