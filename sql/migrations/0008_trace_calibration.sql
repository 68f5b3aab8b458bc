-- Migration 8: calibrated attribution (issue 10). A-priori evidence per source and span, near-copy
-- evidence, control runs, and the excess borrowing of a tuned run over its control.

ALTER TABLE trace_runs ADD COLUMN IF NOT EXISTS role VARCHAR;        -- 'tuned' | 'control' | 'tuned_compare' | NULL
ALTER TABLE trace_runs ADD COLUMN IF NOT EXISTS threshold DOUBLE;    -- likely-source threshold on span evidence
ALTER TABLE trace_spans ADD COLUMN IF NOT EXISTS evidence DOUBLE;    -- strength of the top source (0: not eligible)
ALTER TABLE trace_spans ADD COLUMN IF NOT EXISTS near_copy BOOLEAN;  -- the top source rests on near copies only
ALTER TABLE trace_sources ADD COLUMN IF NOT EXISTS prior DOUBLE;     -- a-priori unlikeliness of the strongest match
ALTER TABLE trace_sources ADD COLUMN IF NOT EXISTS strength DOUBLE;  -- prior x specificity (verbatim or near copy)
ALTER TABLE trace_sources ADD COLUMN IF NOT EXISTS near_copy BOOLEAN;

-- One row per tuned run traced with --control: traced shares of tuned and control responses to
-- the same prompts, the same candidate procedure and the same threshold, and their difference.
CREATE TABLE IF NOT EXISTS trace_excess (
    run_id           VARCHAR PRIMARY KEY,   -- the tuned run as the user asked for it (trace_runs)
    tuned_run_id     VARCHAR NOT NULL,      -- the tuned responses traced with the compared candidates
    control_run_id   VARCHAR NOT NULL,      -- the control responses (role 'control')
    dataset          VARCHAR NOT NULL,
    control          VARCHAR,               -- control model id or responses file
    candidates       VARCHAR NOT NULL,      -- 'shift' (a base model that is not the control) | 'lexical'
    threshold        DOUBLE NOT NULL,       -- likely-source threshold used on both sides
    calibrated       BOOLEAN NOT NULL,      -- threshold set so <= target_share of control spans are likely
    target_share     DOUBLE,
    responses        INTEGER NOT NULL,
    tuned_spans      INTEGER NOT NULL,
    tuned_traced     INTEGER NOT NULL,
    tuned_share      DOUBLE,
    control_spans    INTEGER NOT NULL,
    control_traced   INTEGER NOT NULL,
    control_share    DOUBLE,                -- false "likely source" share when the control never saw the data
    excess           DOUBLE,                -- tuned_share - control_share
    ci_low           DOUBLE,                -- bootstrap interval over responses
    ci_high          DOUBLE,
    confidence       DOUBLE NOT NULL,
    n_boot           INTEGER NOT NULL,
    paired           BOOLEAN NOT NULL,      -- responses resampled by prompt (same prompts on both sides)
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);
