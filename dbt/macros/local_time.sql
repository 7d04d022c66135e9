{#- A UTC timestamp as wall-clock time in the scenario's zone (the transform passes var 'timezone'). -#}
{% macro local_time(column) -%}
timezone('{{ var("timezone", "UTC") }}', {{ column }}::timestamptz)
{%- endmacro %}
