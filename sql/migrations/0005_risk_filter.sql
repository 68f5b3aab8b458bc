-- 0005: tables for the style, novelty and filter blocks (issue 7).

-- Per-instance response style features (check `style`): the patterns a tuned model copies.
CREATE TABLE IF NOT EXISTS style_features (
    dataset        VARCHAR NOT NULL,
    idx            BIGINT NOT NULL,
    n_chars        INTEGER NOT NULL,
    n_words        INTEGER NOT NULL,
    n_lines        INTEGER NOT NULL,
    n_bullets      INTEGER NOT NULL,      -- lines starting with -, *, + or •
    n_numbered     INTEGER NOT NULL,      -- lines starting with '1.' / '1)'
    n_headings     INTEGER NOT NULL,      -- markdown '#' headings
    n_code_blocks  INTEGER NOT NULL,      -- fenced ``` blocks
    opening        VARCHAR,               -- first words of the response, normalized
    boilerplate    VARCHAR[],             -- names of matched boilerplate patterns
    PRIMARY KEY (dataset, idx)
);

-- Per-instance base-model loss of the response given the instruction (check `novelty`).
-- Rows are written batch by batch so a long run resumes where it stopped.
CREATE TABLE IF NOT EXISTS novelty_scores (
    dataset       VARCHAR NOT NULL,
    idx           BIGINT NOT NULL,
    model_id      VARCHAR NOT NULL,
    max_tokens    INTEGER NOT NULL,
    content_hash  VARCHAR NOT NULL,       -- instances.content_hash when scored (stale rows are redone)
    nll_sum       DOUBLE NOT NULL,        -- nats over the scored response tokens
    n_tokens      INTEGER NOT NULL,
    n_bytes       INTEGER NOT NULL,       -- UTF-8 bytes of the scored response text
    bpb           DOUBLE NOT NULL,        -- nll_sum / ln 2 / n_bytes
    truncated     BOOLEAN NOT NULL,
    scored_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, idx, model_id, max_tokens)
);

-- One row per `itaudit filter` export; `manifest` is the full JSON manifest written next to it.
CREATE TABLE IF NOT EXISTS filter_manifests (
    manifest_id         VARCHAR PRIMARY KEY,
    dataset             VARCHAR NOT NULL,
    out_path            VARCHAR NOT NULL,
    export_format       VARCHAR NOT NULL,   -- jsonl | parquet | hf
    normalized          BOOLEAN NOT NULL,
    n_kept              BIGINT NOT NULL,
    n_dropped           BIGINT NOT NULL,
    source_fingerprint  VARCHAR NOT NULL,
    manifest            JSON NOT NULL,
    created_at          TIMESTAMP NOT NULL DEFAULT current_timestamp
);
