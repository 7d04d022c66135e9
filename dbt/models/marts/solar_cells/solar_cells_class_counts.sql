-- Labelled examples per split and class: what the model card's data card and the gates read.
select split, label, count(*) as examples
from {{ ref('solar_cells_examples') }}
where is_labelled
group by split, label
