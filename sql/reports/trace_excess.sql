-- trace: excess borrowing per tuned run traced with --control (tuned traced share - control traced share, bootstrap interval)
SELECT e.run_id, r.tuned_model, e.control, e.dataset, e.candidates, round(e.threshold, 4) AS threshold,
       e.calibrated, e.responses,
       e.tuned_traced || '/' || e.tuned_spans AS tuned_traced_spans,
       round(e.tuned_share, 4) AS tuned_share,
       e.control_traced || '/' || e.control_spans AS control_traced_spans,
       round(e.control_share, 4) AS control_share,
       round(e.excess, 4) AS excess,
       round(e.ci_low, 4) AS ci_low, round(e.ci_high, 4) AS ci_high,
       e.confidence, e.paired, e.tuned_run_id, e.control_run_id, e.created_at
FROM trace_excess e
LEFT JOIN trace_runs r ON r.run_id = e.run_id
ORDER BY e.created_at DESC
