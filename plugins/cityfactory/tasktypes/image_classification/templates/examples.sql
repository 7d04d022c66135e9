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
    label,
    label_source,
    labelled_at,
    label is not null as is_labelled
from grouped
