-- 0006: fine-tuning runs (`itaudit tune`, issue 5).

-- One row per tuning run; updated as it goes (status running -> done) and on resume.
CREATE TABLE IF NOT EXISTS tune_runs (
    run_id        VARCHAR PRIMARY KEY,
    base_model    VARCHAR NOT NULL,       -- alias, HF dir or .gguf as given to --base
    method        VARCHAR NOT NULL,       -- 'lora' | 'full'
    dataset       VARCHAR NOT NULL,       -- instances.dataset
    where_sql     VARCHAR,                -- the --where predicate (NULL: every row)
    n_rows        BIGINT NOT NULL,        -- instances selected
    n_examples    BIGINT NOT NULL,        -- examples trained on (rows whose prompt fits --max-len)
    n_tokens      BIGINT NOT NULL,        -- response tokens per epoch (the ones with loss)
    rows_sha      VARCHAR NOT NULL,       -- sha1 of the selected idx list (resume checks it)
    epochs        INTEGER NOT NULL,
    steps         INTEGER NOT NULL,       -- optimizer steps planned
    steps_done    INTEGER NOT NULL DEFAULT 0,
    hyperparams   JSON NOT NULL,          -- lr, lora r/alpha/targets, max_len, batch, accum, seed, ...
    out_dir       VARCHAR NOT NULL,       -- HF model dir (full) or PEFT adapter dir (lora)
    losses        JSON,                   -- mean response-token loss per optimizer step
    final_loss    DOUBLE,                 -- mean loss of the last epoch's steps
    seconds       DOUBLE,                 -- training wall time (summed over resumed sessions)
    device        VARCHAR,
    status        VARCHAR NOT NULL,       -- 'running' | 'stopped' | 'done'
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at   TIMESTAMP
);
