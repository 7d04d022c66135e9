-- Examples for the classifier: one row per distinct image, its statistics, its label when known,
-- and its split. The split is stable and by content: a near-duplicate group's name (a sha256)
-- picks its bucket, so an image keeps its split as the history grows and near-copies never
-- straddle two splits. 20 % test, 15 % validation, the rest train.
with

labelled as (
    select * from {{ ref('int_${name}__labelled') }}
),

groups as (
    select * from {{ ref('int_${name}__duplicate_groups') }}
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
    label,
    label_source,
    labelled_at,
    label is not null as is_labelled
from bucketed
