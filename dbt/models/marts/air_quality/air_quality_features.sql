-- Features for forecasting each station's next-hour PM2.5: one row per station and target hour,
-- every feature known one hour before it (windows per station over its regular hourly series).
-- Incremental: a run rewrites the rows of its window (see macros/run_window.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['station', 'target_at'],
        on_schema_change='fail',
    )
}}
with

hourly as (
    select * from {{ ref('int_air_quality__hourly') }}
),

features as (
    select
        station,
        hour_at as target_at,
        pm25_ugm3 as target_pm25,

        lag(pm25_ugm3, 1) over by_hour as pm25_lag_1h,
        lag(pm25_ugm3, 2) over by_hour as pm25_lag_2h,
        lag(pm25_ugm3, 3) over by_hour as pm25_lag_3h,
        -- with lags 1-3 and 6: the last six hours, hour by hour (the recurrent model's window)
        lag(pm25_ugm3, 4) over by_hour as pm25_lag_4h,
        lag(pm25_ugm3, 5) over by_hour as pm25_lag_5h,
        lag(pm25_ugm3, 6) over by_hour as pm25_lag_6h,
        lag(pm25_ugm3, 24) over by_hour as pm25_lag_24h,
        -- window aggregates rounded: a rebuilt window then gives the same bits as a full build
        round(avg(pm25_ugm3) over last_day, 6) as pm25_mean_24h,
        round(stddev_samp(pm25_ugm3) over last_day, 6) as pm25_std_24h,
        count(pm25_ugm3) over last_day as observed_hours_24h,
        lag(pm25_repeat_hours, 1) over by_hour as pm25_repeat_hours,
        lag(city_pm25_ugm3, 1) over by_hour as city_pm25_lag_1h,
        lag(city_pm25_ugm3, 2) over by_hour as city_pm25_lag_2h,

        lag(pm10_ugm3, 1) over by_hour as pm10_lag_1h,
        lag(no2_ugm3, 1) over by_hour as no2_lag_1h,
        lag(co_ugm3, 1) over by_hour as co_lag_1h,
        lag(o3_ugm3, 1) over by_hour as o3_lag_1h,
        lag(temp_c, 1) over by_hour as temp_c_lag_1h,
        lag(pressure_hpa, 1) over by_hour as pressure_hpa_lag_1h,
        lag(dewpoint_c, 1) over by_hour as dewpoint_c_lag_1h,
        lag(rain_mm, 1) over by_hour as rain_mm_lag_1h,
        lag(wind_speed_ms, 1) over by_hour as wind_speed_ms_lag_1h,
        coalesce(lag(wind_direction, 1) over by_hour, 'unknown') as wind_direction_lag_1h,

        extract(hour from local_at)::integer as hour_of_day,
        isodow(local_at)::integer as day_of_week,
        extract(month from local_at)::integer as month,
        isodow(local_at) >= 6 as is_weekend
    from hourly
    window
        by_hour as (partition by station order by hour_at),
        last_day as (partition by station order by hour_at rows between 24 preceding and 1 preceding)
)

select
    *,
    target_pm25 is not null
        and pm25_lag_1h is not null
        and pm25_lag_2h is not null
        and pm25_lag_3h is not null
        and pm25_lag_4h is not null
        and pm25_lag_5h is not null
        and pm25_lag_6h is not null
        and pm25_lag_24h is not null
        and observed_hours_24h >= 18
        and city_pm25_lag_1h is not null
        and city_pm25_lag_2h is not null
        and pm10_lag_1h is not null
        and no2_lag_1h is not null
        and co_lag_1h is not null
        and o3_lag_1h is not null
        and temp_c_lag_1h is not null
        and pressure_hpa_lag_1h is not null
        and dewpoint_c_lag_1h is not null
        and rain_mm_lag_1h is not null
        and wind_speed_ms_lag_1h is not null as is_complete
from features
{{ output_window('target_at') }}
