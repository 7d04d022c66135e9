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

bucketed as (
    select
        labelled.*,
        groups.duplicate_group,
        groups.group_size,
        ('0x' || substr(groups.duplicate_group, 1, 8))::bigint % 100 as split_bucket
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
    case when split_bucket < 20 then 'test' when split_bucket < 35 then 'validation' else 'train' end as dataset_split,
    defect_class,
    case defect_class when 'defective' then 1 when 'functional' then 0 end as is_defective,
    defect_probability,
    label_source,
    labelled_at,
    defect_class is not null as is_labelled
from bucketed
