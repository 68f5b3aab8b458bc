-- token shift: KL and shift rate of the first 5% vs the last 95% of tokens of each sentence
SELECT run_id,
       CASE WHEN sentence_frac < 0.05 THEN 'first 5%' ELSE 'last 95%' END AS part,
       count(*) AS tokens,
       avg(kl) AS mean_kl,
       median(kl) AS median_kl,
       round(100.0 * avg((category <> 'unshifted')::INT), 2) AS pct_shifted_or_marginal,
       avg(base_prob) AS mean_base_prob
FROM shift_tokens
GROUP BY ALL
ORDER BY run_id, part;
