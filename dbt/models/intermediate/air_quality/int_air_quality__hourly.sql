-- A regular hourly series per station from its first to its last reading (missing hours become
-- rows with null readings), the city-wide mean of every hour across stations, and how many hours
-- in a row a station has reported the same PM2.5 (a stuck sensor).
with

observations as (
    select * from {{ ref('stg_air_quality__observations') }}
),

spine as (
    select
        station,
        unnest(generate_series(min(observed_at), max(observed_at), interval 1 hour)) as hour_at
    from observations
    group by station
),

joined as (
    select
        spine.station,
        spine.hour_at,
        {{ local_time('spine.hour_at') }} as local_at,
        observations.observed_at is not null as is_observed,
        observations.pm25_ugm3,
        observations.pm10_ugm3,
        observations.no2_ugm3,
        observations.co_ugm3,
        observations.o3_ugm3,
        observations.temp_c,
        observations.pressure_hpa,
        observations.dewpoint_c,
        observations.rain_mm,
        observations.wind_direction,
        observations.wind_speed_ms
    from spine
    left join observations
        on observations.station = spine.station
        and observations.observed_at = spine.hour_at
),

runs as (
    -- islands of one unchanged PM2.5 value per station (gaps and islands)
    select
        *,
        row_number() over (partition by station order by hour_at)
            - row_number() over (partition by station, pm25_ugm3 order by hour_at) as value_run
    from joined
)

select
    * exclude (value_run),
    round(avg(pm25_ugm3) over (partition by hour_at), 6) as city_pm25_ugm3,
    case when pm25_ugm3 is not null
        then count(*) over (partition by station, pm25_ugm3, value_run order by hour_at)
    end as pm25_repeat_hours
from runs
