{#- Generic test: no two rows share the same values in `columns` (a compound key). -#}
{% test dbt_utils_free_unique_pair(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
