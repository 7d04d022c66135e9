-- The image manifest as landed: one row per accepted image file.
select
    sha256,
    image_key,
    file,
    camera,
    captured_at::timestamp as captured_at,  -- UTC
    cell_type,
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
from {{ source('solar_cells_lake', 'images') }}
