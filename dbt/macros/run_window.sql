{#- A nightly run rebuilds only its window: the transform passes the UTC bounds as vars.
    input_from .. input_to   the rows models read (the run's days, plus the features' lookback)
    output_from .. input_to  the mart rows rewritten (the run's days and those whose lags reach them)
    Without the vars (a full refresh, or dbt run by hand) models read everything. -#}

{% macro input_window(time_column, partition_column='dt') -%}
{%- if var('input_from', none) is not none -%}
where {{ partition_column }} between cast('{{ var("input_from") }}' as date) - 1 and cast('{{ var("input_to") }}' as date) + 1
    and {{ time_column }} >= '{{ var("input_from") }}'::timestamp
    and {{ time_column }} < '{{ var("input_to") }}'::timestamp
{%- endif -%}
{%- endmacro %}

{% macro output_window(time_column) -%}
{%- if is_incremental() and var('output_from', none) is not none -%}
where {{ time_column }} >= '{{ var("output_from") }}'::timestamp
    and {{ time_column }} < '{{ var("input_to") }}'::timestamp
{%- endif -%}
{%- endmacro %}
