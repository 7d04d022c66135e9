-- The verdicts as they arrived; a file may be judged again (the latest counts).
select
    file,
    label,
    labelled_at::timestamp as labelled_at,  -- UTC
    _source_file as label_source,
    dt as landed_on
from {{ source('${name}_lake', 'labels') }}
