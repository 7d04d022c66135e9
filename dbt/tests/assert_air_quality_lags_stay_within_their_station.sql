-- The 1-hour lag of a station's target must be that station's previous-hour target (guards the
-- window's partition and order: a lag must never reach into another station).
{{ config(tags=['air_quality']) }}
with features as (
    select station, target_at, target_pm25, pm25_lag_1h,
           lead(pm25_lag_1h) over (partition by station order by target_at) as next_lag_1h,
           max(target_at) over (partition by station) as last_at
    from {{ ref('air_quality_features') }}
)
select * from features
where next_lag_1h is distinct from target_pm25
  and target_at < last_at
