-- trace: IT instances most often borrowed from (likely sources of candidate spans, all runs)
SELECT s.dataset, s.idx,
       count(*) AS spans_traced,
       count(DISTINCT s.run_id || ':' || s.response_id) AS responses,
       round(avg(s.score), 3) AS mean_score,
       string_agg(DISTINCT sp.text, ' | ') AS borrowed_spans,
       any_value(left(i.instruction, 120)) AS instruction,
       any_value(left(i.response, 160)) AS response
FROM trace_sources s
JOIN trace_spans sp USING (run_id, response_id, span_id)
LEFT JOIN instances i ON i.dataset = s.dataset AND i.idx = s.idx
WHERE s.likely_source
GROUP BY s.dataset, s.idx
ORDER BY spans_traced DESC, responses DESC, mean_score DESC, s.idx
LIMIT 200
