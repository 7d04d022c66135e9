-- Each distinct image once (the first capture of the same pixels), with its latest verdict when one
-- has arrived: the manifest's "label when known, label source and time".
with

images as (
    select * from {{ ref('stg_solar_cells__images') }}
    qualify row_number() over (partition by sha256 order by captured_at, file) = 1
),

verdicts as (
    select * from {{ ref('stg_solar_cells__labels') }}
    qualify row_number() over (partition by file order by labelled_at desc, label_source desc) = 1
)

select
    images.*,
    verdicts.defect_probability,
    case
        when verdicts.defect_probability is null then null
        when verdicts.defect_probability >= 0.5 then 'defective'
        else 'functional'
    end as defect_class,
    verdicts.label_source,
    verdicts.labelled_at
from images
left join verdicts using (file)
