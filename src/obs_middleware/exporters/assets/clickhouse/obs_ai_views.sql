-- The text view and the image view of the AI call spans in obs_events (one row per call), for
-- self-hosted ClickHouse; the Tinybird pipes ai_text_calls / ai_image_calls aggregate the same
-- calls. A call's modality is its `ai.modality`; for calls recorded without it: image when it
-- reports an image count, text when it reports tokens. Statements separated by ';' (clickhouse.views()
-- returns them one by one: the HTTP interface takes one per request). Runs on ClickHouse 18.16.
CREATE VIEW IF NOT EXISTS obs_ai_text AS
SELECT
    start, service, environment, service_version, host_name, user_id, tier, trace_id, span_id,
    ai_provider AS provider, ai_model AS model, ai_operation AS operation, status, duration_ms,
    ai_input_tokens AS input_tokens, ai_cached_tokens AS cached_tokens,
    ai_output_tokens AS output_tokens, cost_usd, cost_unknown, ai_cache_status AS cache_status
FROM obs_events
WHERE type = 'span' AND ai_model != ''
    AND if(ai_modality != '', ai_modality, if(ai_image_count > 0, 'image', if(ai_input_tokens + ai_output_tokens > 0, 'text', 'unknown'))) = 'text';
CREATE VIEW IF NOT EXISTS obs_ai_image AS
SELECT
    start, service, environment, service_version, host_name, worker_id, machine_id, user_id,
    tier, trace_id, span_id, ai_provider AS provider, ai_model AS model,
    ai_operation AS operation, status, duration_ms, ai_queue_ms AS queue_ms,
    ai_image_count AS images, cost_usd, cost_unknown, ai_cache_status AS cache_status
FROM obs_events
WHERE type = 'span' AND ai_model != ''
    AND if(ai_modality != '', ai_modality, if(ai_image_count > 0, 'image', if(ai_input_tokens + ai_output_tokens > 0, 'text', 'unknown'))) = 'image'
