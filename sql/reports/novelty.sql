-- Knowledge novelty per dataset and base model: bits-per-byte distribution, and the most novel responses.
WITH s AS (
    SELECT n.dataset, n.model_id, n.idx, n.bpb, n.n_tokens, i.instruction, i.response
    FROM novelty_scores n JOIN instances i ON i.dataset = n.dataset AND i.idx = n.idx AND i.content_hash = n.content_hash
)
SELECT dataset, model_id, count(*) AS scored, round(avg(bpb), 4) AS mean_bpb,
       round(quantile_cont(bpb, 0.1), 4) AS p10, round(median(bpb), 4) AS p50, round(quantile_cont(bpb, 0.9), 4) AS p90,
       CAST(list({'idx': idx, 'bpb': round(bpb, 3), 'response': left(response, 80)} ORDER BY bpb DESC)[1:5] AS VARCHAR) AS most_novel
FROM s GROUP BY ALL ORDER BY dataset, model_id;
