-- One row per station and observed hour, with readable names and units in the names.
with

source as (
    select * from {{ source('air_quality_lake', 'bronze') }}
    {{ input_window('observed_at') }}
),

renamed as (
    select
        observed_at::timestamp as observed_at,  -- UTC
        station,
        "PM2.5" as pm25_ugm3,
        "PM10" as pm10_ugm3,
        "SO2" as so2_ugm3,
        "NO2" as no2_ugm3,
        "CO" as co_ugm3,
        "O3" as o3_ugm3,
        "TEMP" as temp_c,
        "PRES" as pressure_hpa,
        "DEWP" as dewpoint_c,
        "RAIN" as rain_mm,
        wd as wind_direction,
        "WSPM" as wind_speed_ms
    from source
)

select * from renamed
