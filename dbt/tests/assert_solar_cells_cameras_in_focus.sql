-- A camera out of focus: a day of one camera's frames whose median sharpness (variance of the
-- Laplacian) is below 4. EL frames are soft and vary by module, so one soft frame is normal; a
-- whole soft day (a blur of a few pixels brings a frame to about 2) is a camera to fix.
{{ config(tags=['solar_cells']) }}
select camera, landed_on, count(*) as frames, median(sharpness) as median_sharpness
from {{ ref('stg_solar_cells__images') }}
group by camera, landed_on
having count(*) >= 10 and median(sharpness) < 4
