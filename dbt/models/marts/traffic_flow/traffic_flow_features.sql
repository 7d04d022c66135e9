-- Features for forecasting the next hour's volume: one row per target hour, every feature known
-- one hour before it (lags count real hours on the regular series; nothing is filled in).
-- Incremental: a run rewrites the rows of its window (see macros/run_window.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='target_at',
        on_schema_change='fail',
    )
}}
with

hourly as (
    select * from {{ ref('int_traffic_flow__hourly') }}
),

features as (
    select
        hour_at as target_at,
        traffic_volume as target_volume,

        lag(traffic_volume, 1) over by_hour as volume_lag_1h,
        lag(traffic_volume, 2) over by_hour as volume_lag_2h,
        lag(traffic_volume, 3) over by_hour as volume_lag_3h,
        -- the rest of the last day, hour by hour (the recurrent model's window)
        {%- for hours in range(4, 24) %}
        lag(traffic_volume, {{ hours }}) over by_hour as volume_lag_{{ hours }}h,
        {%- endfor %}
        lag(traffic_volume, 24) over by_hour as volume_lag_24h,
        lag(traffic_volume, 168) over by_hour as volume_lag_168h,
        -- the usual level of this hour and of the hour before it: the median of the same hours of
        -- the last 4 weeks (observed ones), which one incident or missing week does not move
        list_median([{% for weeks in range(1, 5) %}lag(traffic_volume, {{ 168 * weeks }}) over by_hour{{ ", " if not loop.last }}{% endfor %}])
            as volume_weekly_median,
        list_median([{% for weeks in range(1, 5) %}lag(traffic_volume, {{ 168 * weeks + 1 }}) over by_hour{{ ", " if not loop.last }}{% endfor %}])
            as volume_weekly_median_1h,
        -- window aggregates rounded: a rebuilt window then gives the same bits as a full build
        round(avg(traffic_volume) over last_day, 6) as volume_mean_24h,
        round(stddev_samp(traffic_volume) over last_day, 6) as volume_std_24h,
        count(traffic_volume) over last_day as observed_hours_24h,

        extract(hour from local_at)::integer as hour_of_day,
        isodow(local_at)::integer as day_of_week,
        extract(month from local_at)::integer as month,
        isodow(local_at) >= 6 as is_weekend,
        holiday_name is not null as is_holiday,

        lag(temp_c, 1) over by_hour as temp_c_lag_1h,
        lag(rain_mm, 1) over by_hour as rain_mm_lag_1h,
        lag(snow_mm, 1) over by_hour as snow_mm_lag_1h,
        lag(clouds_pct, 1) over by_hour as clouds_pct_lag_1h,
        lag(weather_main, 1) over by_hour as weather_main_lag_1h
    from hourly
    window
        by_hour as (order by hour_at),
        last_day as (order by hour_at rows between 24 preceding and 1 preceding)
)

select
    -- the hour before's usual level, else this hour's (known whenever a week-old count is)
    * replace (coalesce(volume_weekly_median_1h, volume_weekly_median) as volume_weekly_median_1h),
    -- how far the latest hour is above its usual level (unknown: taken as usual)
    coalesce(volume_lag_1h - coalesce(volume_weekly_median_1h, volume_weekly_median), 0) as volume_above_weekly_median_1h,
    target_volume is not null
        and volume_lag_1h is not null
        and volume_lag_2h is not null
        and volume_lag_3h is not null
        and volume_lag_24h is not null
        and volume_lag_168h is not null
        and observed_hours_24h = 24
        and temp_c_lag_1h is not null as is_complete
from features
{{ output_window('target_at') }}
