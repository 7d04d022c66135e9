-- One row per $row_grain as landed, with snake_case names (drafted by new-scenario).
with

source as (
    select * from {{ source('${name}_lake', 'bronze') }}
    {{ input_window('$time_quoted') }}
),

renamed as (
    select
        $time_quoted::timestamp as observed_at,  -- UTC
$renamed
    from source
)

select * from renamed
