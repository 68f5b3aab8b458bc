-- token shift: unshifted (rank 1) / marginal (2-3) / shifted (>3) percentages and mean KL per run
SELECT r.run_id, r.mode, r.base_model, r.tuned_model,
       count(t.position) AS tokens,
       count(DISTINCT t.prompt_id) AS responses,
       round(100.0 * avg((t.category = 'unshifted')::INT), 2) AS pct_unshifted,
       round(100.0 * avg((t.category = 'marginal')::INT), 2) AS pct_marginal,
       round(100.0 * avg((t.category = 'shifted')::INT), 2) AS pct_shifted,
       avg(t.kl) AS mean_kl,
       avg(t.base_prob) AS mean_base_prob,
       r.kl_available, r.retokenized, r.created_at
FROM shift_runs r JOIN shift_tokens t USING (run_id)
GROUP BY ALL
ORDER BY r.created_at DESC;
