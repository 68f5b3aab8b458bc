-- token shift: share of words starting with a shifted/marginal (vs unshifted) token found verbatim in the run's reference IT dataset
WITH refs AS (
    SELECT DISTINCT reference_dataset AS dataset FROM shift_runs WHERE reference_dataset IS NOT NULL
),
vocab AS (
    SELECT DISTINCT i.dataset, lower(w.word) AS word
    FROM instances i JOIN refs USING (dataset),
         unnest(regexp_extract_all(i.response, '\w+(?:[''’]\w+)*')) AS w(word)
),
starts AS (
    SELECT t.run_id, r.reference_dataset AS dataset, t.category, lower(t.word) AS word
    FROM shift_tokens t JOIN shift_runs r USING (run_id)
    WHERE r.reference_dataset IS NOT NULL AND t.is_word_start AND regexp_matches(t.word, '\w')
)
SELECT s.run_id, s.dataset AS reference_dataset,
       CASE WHEN s.category = 'unshifted' THEN 'unshifted' ELSE 'shifted or marginal' END AS words_starting_with,
       count(*) AS words,
       count(v.word) AS in_dataset,
       round(100.0 * count(v.word) / count(*), 2) AS pct_in_dataset
FROM starts s LEFT JOIN vocab v ON v.dataset = s.dataset AND v.word = s.word
GROUP BY ALL
ORDER BY s.run_id, words_starting_with DESC;
