-- The image manifest as landed: one row per accepted image file (drafted by new-scenario).
select
    sha256,
    image_key,
    file,
    camera,
    captured_at::timestamp as captured_at,  -- UTC
    format,
    width,
    height,
    channels,
    bytes,
    brightness,
    contrast,
    sharpness,
    phash,
    phash_bits,
    metadata_stripped,
    _source_file as capture_file,
    dt as landed_on
from {{ source('${name}_lake', 'images') }}
