-- Near-duplicates: images whose perceptual hashes differ in at most 4 of 64 bits, joined into
-- groups transitively; a group is named by its smallest sha256. The split assigns whole groups,
-- so no image has a near-copy on the other side of it.
{{ near_duplicate_groups(ref('int_solar_cells__labelled'), max_bits=4) }}
