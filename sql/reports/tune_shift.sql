-- token shift of each tuned model against its base (shift runs joined to tune runs by output dir)
SELECT t.method, t.run_id AS tune_run, s.run_id AS shift_run, t.base_model, t.dataset, t.n_examples,
       t.steps, round(t.final_loss, 4) AS final_loss, round(t.seconds, 1) AS train_seconds,
       count(*) AS tokens,
       count(DISTINCT k.prompt_id) AS responses,
       round(100.0 * avg((k.category = 'unshifted')::INT), 2) AS pct_unshifted,
       round(100.0 * avg((k.category = 'marginal')::INT), 2) AS pct_marginal,
       round(100.0 * avg((k.category = 'shifted')::INT), 2) AS pct_shifted,
       round(100.0 * avg((k.category = 'shifted')::INT) FILTER (WHERE k.position < 5), 2) AS pct_shifted_first5,
       round(100.0 * avg((k.category = 'shifted')::INT) FILTER (WHERE k.position >= 5), 2) AS pct_shifted_after5,
       round(avg(k.kl), 4) AS mean_kl,
       round(avg(k.base_prob), 4) AS mean_base_prob
FROM tune_runs t
JOIN shift_runs s ON s.tuned_model = t.out_dir OR suffix(s.tuned_model, '+' || t.out_dir)
JOIN shift_tokens k ON k.run_id = s.run_id
GROUP BY ALL
ORDER BY min(s.created_at);
