-- fine-tuning runs (itaudit tune): method, data selection, steps, first/final loss, time, status
SELECT run_id, method, base_model, dataset, where_sql, n_rows, n_examples, n_tokens, epochs,
       steps_done || '/' || steps AS steps,
       round(CAST(json_extract(losses, '$[0]') AS DOUBLE), 4) AS first_loss,
       round(final_loss, 4) AS final_loss,
       CAST(json_extract(hyperparams, '$.lr') AS DOUBLE) AS lr,
       round(seconds, 1) AS seconds, device, status, out_dir, created_at
FROM tune_runs
ORDER BY created_at DESC;
