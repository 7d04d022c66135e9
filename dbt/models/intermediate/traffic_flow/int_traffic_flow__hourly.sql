-- A regular hourly series (UTC hours, so daylight-saving changes leave no gap or repeat) from the
-- first to the last observed hour: missing hours become rows
-- with is_observed = false and null measurements, so lags and windows count real hours.
with

observations as (
    select * from {{ ref('stg_traffic_flow__observations') }}
),

spine as (
    select unnest(generate_series(min(observed_at), max(observed_at), interval 1 hour)) as hour_at
    from observations
),

joined as (
    select
        spine.hour_at,
        observations.observed_at is not null as is_observed,
        observations.traffic_volume,
        observations.temp_c,
        observations.rain_mm,
        observations.snow_mm,
        observations.clouds_pct,
        observations.weather_main,
        {{ local_time('spine.hour_at') }} as local_at,
        -- the dataset flags a holiday on its midnight hour only; the whole (local) day is the holiday
        max(observations.holiday_name) over (partition by cast({{ local_time('spine.hour_at') }} as date)) as holiday_name
    from spine
    left join observations on observations.observed_at = spine.hour_at
)

select * from joined
