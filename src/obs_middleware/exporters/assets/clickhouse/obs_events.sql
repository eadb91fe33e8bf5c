-- obs-middleware records (docs/ARCHITECTURE.md, The record) for self-hosted ClickHouse: the columns of
-- assets/tinybird/datasources/obs_events.datasource. Written by ClickHouseExporter with
-- INSERT ... FORMAT JSONEachRow. Runs on ClickHouse 18.16 and later; on 20.1+ you may prefer
-- `start DateTime64(6, 'UTC')` (sub-second order) and LowCardinality(String) for the short
-- enumerations (type, service, status, ai_model...): the exporter and the queries need no change.
CREATE TABLE IF NOT EXISTS obs_events
(
    `type` String,
    `name` String,
    `trace_id` String,
    `span_id` String,
    `parent_id` String,
    `service` String,
    `environment` String,
    `start` DateTime('UTC'),
    `duration_ms` Float64,
    `status` String,
    `error_type` String,
    `error_message` String,
    `user_id` String,
    `tier` String,
    `request_id` String,
    `service_version` String,
    `host_name` String,
    `service_instance_id` String,
    `worker_id` String,
    `machine_id` String,
    `span_kind` String,
    `http_method` String,
    `http_route` String,
    `http_status_code` Int64,
    `http_request_size` Int64,
    `http_response_size` Int64,
    `db_system` String,
    `db_operation` String,
    `db_table` String,
    `db_statement` String,
    `db_rows` Int64,
    `ai_provider` String,
    `ai_model` String,
    `ai_operation` String,
    `ai_modality` String,
    `ai_request_id` String,
    `ai_queue_ms` Float64,
    `ai_input_tokens` Int64,
    `ai_cached_tokens` Int64,
    `ai_output_tokens` Int64,
    `ai_image_count` Int64,
    `ai_cache_status` String,
    `cost_usd` Float64,
    `cost_unknown` String,
    `job_id` String,
    `job_state` String,
    `job_worker_id` String,
    `job_machine_id` String,
    `exception_stacktrace` String,
    `attributes` String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(start)
ORDER BY (service, start, user_id)
