"""Tuning options the CLI shows at start-up, kept free of torch (importing torch costs ~2 s)."""

from __future__ import annotations

DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

WHERE_HELP = (
    "SQL predicate selecting training rows. `i` is the instances table (columns idx, instruction, "
    "input, response, category, source, ...; unqualified names resolve to it); any table or view "
    "of the database can be used in subqueries, e.g. check_results (dataset, check_name, idx, flag, "
    "score), latest_checks, check_pairs, style_features, novelty_scores."
)
