{#- Near-duplicate images: perceptual hashes within `max_bits` of 64 bits, joined into groups
    transitively; a group is named by its smallest sha256 (columns sha256, duplicate_group,
    group_size). `images` is a relation with sha256 and phash_bits. -#}
{% macro near_duplicate_groups(images, max_bits=4) %}
with recursive

images as (
    select sha256, phash_bits from {{ images }}
),

near as (
    select a.sha256 as a, b.sha256 as b
    from images as a
    join images as b on a.sha256 <> b.sha256 and bit_count(xor(a.phash_bits, b.phash_bits)) <= {{ max_bits }}
),

reach(sha256, other) as (
    select sha256, sha256 from images
    union
    select reach.sha256, near.b from reach join near on reach.other = near.a
)

select sha256, min(other) as duplicate_group, count(*) as group_size
from reach
group by sha256
{% endmacro %}

{#- A split that is stable and by content: a hex hash's first 8 digits pick a bucket of 100, so a
    row keeps its split as the history grows, and rows sharing the hash share the split. -#}
{% macro content_split(hex_hash, test_percent=20, validation_percent=15) -%}
case
    when ('0x' || substr({{ hex_hash }}, 1, 8))::bigint % 100 < {{ test_percent }} then 'test'
    when ('0x' || substr({{ hex_hash }}, 1, 8))::bigint % 100 < {{ test_percent + validation_percent }} then 'validation'
    else 'train'
end
{%- endmacro %}
