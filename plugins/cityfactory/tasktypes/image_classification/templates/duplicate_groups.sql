-- Near-duplicates: images whose perceptual hashes differ in at most 4 of 64 bits, joined into
-- groups transitively; a group is named by its smallest sha256. The split assigns whole groups,
-- so no image has a near-copy on the other side of it.
with recursive

images as (
    select sha256, phash_bits from {{ ref('int_${name}__labelled') }}
),

near as (
    select a.sha256 as a, b.sha256 as b
    from images as a
    join images as b on a.sha256 <> b.sha256 and bit_count(xor(a.phash_bits, b.phash_bits)) <= 4
),

reach(sha256, other) as (
    select sha256, sha256 from images
    union
    select reach.sha256, near.b from reach join near on reach.other = near.a
)

select sha256, min(other) as duplicate_group, count(*) as group_size
from reach
group by sha256
