-- Labelled examples per split and class: what the model card's data card and the gates read.
select dataset_split, defect_class, count(*) as examples
from {{ ref('solar_cells_examples') }}
where is_labelled
group by dataset_split, defect_class
