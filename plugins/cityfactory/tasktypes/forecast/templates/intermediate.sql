-- A regular hourly series$per_series from its first to its last reading (missing hours become rows
-- with null readings), and how many hours in a row $target has kept the same value (a stuck sensor).
with

observations as (
    select * from {{ ref('stg_${name}__observations') }}
),

spine as (
    select
$spine_series        unnest(generate_series(min(observed_at), max(observed_at), interval 1 hour)) as hour_at
    from observations
$spine_group),

joined as (
    select
$joined_series        spine.hour_at,
        {{ local_time('spine.hour_at') }} as local_at,
        observations.observed_at is not null as is_observed,
$readings
    from spine
    left join observations
        on $join_on
),

runs as (
    -- islands of one unchanged value (gaps and islands)
    select
        *,
        row_number() over (${partition}order by hour_at)
            - row_number() over (partition by ${partition_prefix}$t order by hour_at) as value_run
    from joined
)

select
    * exclude (value_run),
    case when $t is not null
        then count(*) over (partition by ${partition_prefix}$t, value_run order by hour_at)
    end as ${t}_repeat_hours
from runs
