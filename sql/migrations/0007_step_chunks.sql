-- Migration 7: completion markers of row-parallel steps (issue 12). The runner commits each chunk's
-- output and its marker in one transaction; a rerun with the same key skips the chunks marked here.
CREATE TABLE IF NOT EXISTS step_chunks (
    dataset      VARCHAR NOT NULL,
    step         VARCHAR NOT NULL,
    run_key      VARCHAR NOT NULL,        -- hash of the step's params, the dataset fingerprint and chunking
    chunk_id     INTEGER NOT NULL,        -- 0..n_chunks-1, rows [lo, hi] of the dataset in idx order
    n_chunks     INTEGER NOT NULL,
    n_rows       BIGINT NOT NULL,
    finished_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, step, run_key, chunk_id)
);
