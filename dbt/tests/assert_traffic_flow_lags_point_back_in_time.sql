-- The 1-hour lag of a target must be the previous hour's target volume (guards the window order).
{{ config(tags=['traffic_flow']) }}
with features as (
    select target_at, target_volume, volume_lag_1h,
           lead(volume_lag_1h) over (order by target_at) as next_lag_1h
    from {{ ref('traffic_flow_features') }}
)
select * from features
where next_lag_1h is distinct from target_volume
  and target_at < (select max(target_at) from features)
