-- Each distinct image once (the first capture of the same pixels), with its latest verdict when one
-- has arrived.
with

images as (
    select * from {{ ref('stg_${name}__images') }}
    qualify row_number() over (partition by sha256 order by captured_at, file) = 1
),

verdicts as (
    select * from {{ ref('stg_${name}__labels') }}
    qualify row_number() over (partition by file order by labelled_at desc, label_source desc) = 1
)

select
    images.*,
    verdicts.label,
    verdicts.label_source,
    verdicts.labelled_at
from images
left join verdicts using (file)
