-- trace: per-response view of the latest run (spans, best source and its evidence)
WITH latest AS (SELECT run_id FROM trace_runs ORDER BY created_at DESC LIMIT 1)
SELECT sp.response_id, tr.prompt_id, left(tr.instruction, 80) AS instruction,
       sp.span_id, sp.text AS span, round(sp.candidate_score, 3) AS candidate_score,
       sp.verbatim, sp.traced, sp.best_idx, round(sp.best_score, 3) AS best_score,
       json_extract_string(src.evidence, '$.phrases') AS evidence_phrases,
       left(i.instruction, 100) AS source_instruction
FROM trace_spans sp
JOIN latest USING (run_id)
JOIN trace_responses tr USING (run_id, response_id)
LEFT JOIN trace_sources src ON src.run_id = sp.run_id AND src.response_id = sp.response_id
     AND src.span_id = sp.span_id AND src.rank = 1
LEFT JOIN trace_runs r ON r.run_id = sp.run_id
LEFT JOIN instances i ON i.dataset = r.dataset AND i.idx = sp.best_idx
ORDER BY sp.response_id, sp.span_id
