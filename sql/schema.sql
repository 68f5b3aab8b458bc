-- itaudit DuckDB schema, version 1 (core). Later versions live in sql/migrations/NNNN_name.sql
-- and are applied in order, each in its own transaction, recorded in schema_version.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    name        VARCHAR NOT NULL,
    applied_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per ingested dataset.
CREATE TABLE IF NOT EXISTS datasets (
    name         VARCHAR PRIMARY KEY,
    source_path  VARCHAR NOT NULL,
    format       VARCHAR NOT NULL,        -- alpaca | dolly | sharegpt | messages | lima | oasst
    fingerprint  VARCHAR NOT NULL,        -- sha256 of the source bytes (+ ingest options)
    n_rows       BIGINT NOT NULL,         -- normalized instances
    n_source     BIGINT NOT NULL,         -- source records read
    n_rejected   BIGINT NOT NULL DEFAULT 0,
    ingested_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- The normalized schema: one row per (source record, assistant turn).
-- `idx` is a dense 0..n-1 row id inside the dataset (FAISS ids, joins from signal tables).
CREATE TABLE IF NOT EXISTS instances (
    dataset       VARCHAR NOT NULL,
    idx           BIGINT NOT NULL,
    instance_id   VARCHAR NOT NULL,       -- '<source row>-<turn>-<content hash prefix>': stable
    source_row    BIGINT NOT NULL,        -- 0-based record index in the source file
    turn          INTEGER NOT NULL,       -- 0-based assistant turn within the record
    system        VARCHAR,                -- system prompt, if any
    history       JSON,                   -- earlier turns [{role, content}] for multi-turn data
    instruction   VARCHAR NOT NULL,
    input         VARCHAR,                -- input / context
    response      VARCHAR NOT NULL,
    category      VARCHAR,
    source        VARCHAR,
    content_hash  VARCHAR NOT NULL,       -- sha1 of the normalized fields
    raw           JSON,                   -- the source record as JSON
    PRIMARY KEY (dataset, idx)
);

-- Rows rejected by `ingest --skip-invalid`, with the reason.
CREATE TABLE IF NOT EXISTS rejected_rows (
    dataset   VARCHAR NOT NULL,
    file      VARCHAR NOT NULL,
    location  VARCHAR NOT NULL,           -- 'line 12' / 'row 7'
    field     VARCHAR,
    reason    VARCHAR NOT NULL,
    raw       VARCHAR
);

-- Uniform audit-check results (cleanlab Datalab style): every check writes one row per
-- instance (flag + 0-1 score), one summary per run, and optional pair evidence.
CREATE TABLE IF NOT EXISTS check_runs (
    run_id      VARCHAR PRIMARY KEY,
    dataset     VARCHAR NOT NULL,
    check_name  VARCHAR NOT NULL,
    params      JSON,
    summary     JSON,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS check_rows (
    run_id      VARCHAR NOT NULL,
    dataset     VARCHAR NOT NULL,
    check_name  VARCHAR NOT NULL,
    idx         BIGINT NOT NULL,
    flag        BOOLEAN NOT NULL,
    score       DOUBLE NOT NULL,          -- 0..1, higher = more of an issue
    cluster_id  BIGINT,                   -- for clustering checks (duplicates), else NULL
    details     JSON
);

CREATE TABLE IF NOT EXISTS check_pairs (
    run_id      VARCHAR NOT NULL,
    dataset     VARCHAR NOT NULL,
    check_name  VARCHAR NOT NULL,
    idx_a       BIGINT NOT NULL,
    idx_b       BIGINT NOT NULL,
    other_dataset VARCHAR,                -- set when b lives in another dataset (contamination)
    score       DOUBLE,
    evidence    JSON
);

-- The latest run of each check per dataset, for reports and joins.
CREATE OR REPLACE VIEW latest_checks AS
SELECT r.* FROM check_runs r
QUALIFY row_number() OVER (PARTITION BY dataset, check_name ORDER BY created_at DESC) = 1;

CREATE OR REPLACE VIEW check_results AS
SELECT c.* FROM check_rows c JOIN latest_checks l USING (run_id);
