-- Features for forecasting next-hour $target$per_series: one row per target hour$per_series_row,
-- every feature known one hour before it (drafted by new-scenario).
-- Incremental: a run rewrites the rows of its window (see macros/run_window.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=[$unique_key],
        on_schema_change='fail',
    )
}}
with

hourly as (
    select * from {{ ref('int_${name}__hourly') }}
),

features as (
    select
$series_select        hour_at as target_at,
        $t as target_$t,
$lags
        -- window aggregates rounded: a rebuilt window then gives the same bits as a full build
        round(avg($t) over last_day, 6) as ${t}_mean_24h,
        round(stddev_samp($t) over last_day, 6) as ${t}_std_24h,
        count($t) over last_day as observed_hours_24h,
        lag(${t}_repeat_hours, 1) over by_hour as ${t}_repeat_hours,
$covariates
        extract(hour from local_at)::integer as hour_of_day,
        isodow(local_at)::integer as day_of_week,
        extract(month from local_at)::integer as month,
        isodow(local_at) >= 6 as is_weekend
    from hourly
    window
        by_hour as (${partition}order by hour_at),
        last_day as (${partition}order by hour_at rows between 24 preceding and 1 preceding)
)

select
    *,
$complete as is_complete
from features
{{ output_window('target_at') }}
