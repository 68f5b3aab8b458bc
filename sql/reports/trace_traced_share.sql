-- trace: per run, share of hallucination-candidate spans traced to the IT data (the paper's headline)
SELECT r.run_id, r.dataset, r.mode, r.tuned_model, r.base_model, r.created_at,
       count(DISTINCT sp.response_id) AS responses,
       count(sp.span_id) AS candidate_spans,
       count(*) FILTER (WHERE sp.verbatim) AS verbatim_spans,
       round(avg(CASE WHEN sp.verbatim THEN 1.0 ELSE 0.0 END), 4) AS verbatim_share,
       count(*) FILTER (WHERE sp.traced) AS traced_spans,
       round(avg(CASE WHEN sp.traced THEN 1.0 ELSE 0.0 END), 4) AS traced_share,
       round(avg(CASE WHEN sp.traced THEN 1.0 ELSE 0.0 END) FILTER (WHERE sp.candidate_score >= 0.5), 4)
           AS traced_share_strong_candidates
FROM trace_runs r
LEFT JOIN trace_spans sp USING (run_id)
GROUP BY ALL
ORDER BY r.created_at DESC
