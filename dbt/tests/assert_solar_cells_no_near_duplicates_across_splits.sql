-- Leakage: two images whose perceptual hashes are within 4 bits must share a split.
{{ config(tags=['solar_cells']) }}
select a.sha256, b.sha256 as near_copy, a.dataset_split, b.dataset_split as near_copy_split
from {{ ref('solar_cells_examples') }} as a
join {{ ref('solar_cells_examples') }} as b
    on a.sha256 < b.sha256 and bit_count(xor(a.phash_bits, b.phash_bits)) <= 4
where a.dataset_split <> b.dataset_split
