-- Examples for the defect classifier: one row per distinct image, its statistics, its label when
-- known, and its split. The split is stable and by content: a near-duplicate group's name (a
-- sha256) picks its bucket, so an image keeps its split as the history grows and near-copies
-- never straddle two splits. 20 % test, 15 % validation, the rest train.
with

labelled as (
    select * from {{ ref('int_solar_cells__labelled') }}
),

groups as (
    select * from {{ ref('int_solar_cells__duplicate_groups') }}
),

grouped as (
    select
        labelled.*,
        groups.duplicate_group,
        groups.group_size
    from labelled
    join groups using (sha256)
)

select
    sha256,
    image_key,
    camera,
    captured_at,
    cell_type,
    width,
    height,
    channels,
    brightness,
    contrast,
    sharpness,
    phash,
    phash_bits,
    duplicate_group,
    group_size,
    {{ content_split('duplicate_group', test_percent=20, validation_percent=15) }} as dataset_split,
    defect_class,
    case defect_class when 'defective' then 1 when 'functional' then 0 end as is_defective,
    defect_probability,
    label_source,
    labelled_at,
    defect_class is not null as is_labelled
from grouped
