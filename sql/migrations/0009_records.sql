-- Each source record's raw JSON is stored once, on the first instance of the record (later turns
-- of a multi-turn record hold NULL in instances.raw). `records` reads it back per source row
-- (datasets ingested before this migration hold it on every turn: any_value picks one).
CREATE OR REPLACE VIEW records AS
SELECT dataset, source_row, any_value(raw) AS raw
FROM instances
WHERE raw IS NOT NULL
GROUP BY dataset, source_row;
