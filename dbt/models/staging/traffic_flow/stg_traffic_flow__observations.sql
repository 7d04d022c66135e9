-- One row per observed hour: the dataset repeats an hour once per simultaneous weather label
-- (the volume is the same in every copy), so labels are folded into the hour here.
with

source as (
    select * from {{ source('traffic_flow_lake', 'bronze') }}
    {{ input_window('date_time') }}
),

renamed as (
    select
        date_time::timestamp as observed_at,  -- UTC
        traffic_volume,
        temp - 273.15 as temp_c,
        rain_1h as rain_mm,
        snow_1h as snow_mm,
        clouds_all as clouds_pct,
        weather_main,
        nullif(holiday, 'None') as holiday_name
    from source
),

hourly as (
    select
        observed_at,
        max(traffic_volume) as traffic_volume,
        count(distinct traffic_volume) as distinct_volumes,
        round(avg(temp_c), 6) as temp_c,  -- rounded: equal bits whichever order the rows come in
        max(rain_mm) as rain_mm,
        max(snow_mm) as snow_mm,
        max(clouds_pct) as clouds_pct,
        min(weather_main) as weather_main,
        count(*) as weather_labels,
        max(holiday_name) as holiday_name
    from renamed
    group by observed_at
)

select * from hourly
