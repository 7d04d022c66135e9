"""``validate`` checks a scenario as a whole, across its files and against the other scenarios:
each mistake a careful new user made unnoticed is named with its file, its key and the fix."""

from __future__ import annotations

import shutil

import pytest
import yaml
from support import configure_harbour_air


@pytest.fixture
def harbour(tmp_path, monkeypatch):
    configure_harbour_air(tmp_path, monkeypatch, "2016-03-01", "2016-03-03")
    return tmp_path


def _edit(path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _problems(scenarios=("harbour_air",), check_dbt=False) -> dict[str, list[str]]:
    from cityfactory.pipeline.preflight import validate_scenarios
    from cityfactory.settings import get_settings

    directory = get_settings().scenarios_dir
    return validate_scenarios([directory / f"{name}.yaml" for name in scenarios], check_dbt=check_dbt)


def test_the_fixture_has_no_problem(harbour):
    assert _problems() == {"harbour_air": []}


def test_series_the_spec_does_not_name_are_found_in_the_data(harbour):
    _edit(harbour / "models" / "harbour_air.yaml", lambda d: d["data"]["one_hot"]["station"].update(values=["Quay North"]))
    [problem] = _problems()["harbour_air"]
    assert str(harbour / "models" / "harbour_air.yaml") in problem
    assert "Lighthouse, Quay South" in problem and "'station'" in problem and "add them to its one-hot values" in problem


def test_series_no_node_serves_are_named_with_the_fleet(harbour):
    def two_stations(fleet):
        fleet["nodes"][0]["series"], fleet["nodes"][1]["series"] = "Quay North", "Quay South"
        fleet["nodes"][2]["series"] = "Quay North"

    _edit(harbour / "fleets" / "harbour_air.yaml", two_stations)
    [problem] = _problems()["harbour_air"]
    assert str(harbour / "fleets" / "harbour_air.yaml") in problem
    assert "key 'nodes': no node serves the series Lighthouse" in problem


def test_a_source_column_in_the_wrong_case_names_the_files_spelling(harbour):
    def lower_case(scenario):
        scenario["schema"]["columns"]["pm2.5"] = scenario["schema"]["columns"].pop("PM2.5")

    _edit(harbour / "scenarios" / "harbour_air.yaml", lower_case)
    suite, *problems = _problems()["harbour_air"]
    assert "harbour_air_bronze.json: key 'expectations.3.kwargs.column': 'PM2.5' is not a bronze column" in suite
    assert len(problems) == 3  # one per source file
    assert "key 'schema.columns.pm2.5': quay_north.csv (source.files.0) has no column 'pm2.5'" in problems[0]
    assert "the file spells it 'PM2.5' (names are case-sensitive)" in problems[0]


def test_a_wrong_pin_shows_the_actual_hash(harbour):
    from cityfactory.storage.lake import sha256_file

    _edit(harbour / "scenarios" / "harbour_air.yaml", lambda d: d["source"]["files"][1].update(sha256="ab" * 32))
    [problem] = _problems()["harbour_air"]
    actual = sha256_file(harbour / "data" / "harbour_air_fixture" / "quay_south.csv")
    assert "key 'source.files.1.sha256'" in problem and f"has sha256 {actual}, the pin says {'ab' * 32}" in problem


def test_a_second_scenario_sharing_a_model_name_and_ports_is_refused(harbour):
    scenarios = harbour / "scenarios"
    _edit(shutil.copy(scenarios / "harbour_air.yaml", scenarios / "harbour_copy.yaml"),
          lambda d: d.update(name="harbour_copy", rollout={**d["rollout"], "fleet": "harbour_copy"}))
    shutil.copy(harbour / "fleets" / "harbour_air.yaml", harbour / "fleets" / "harbour_copy.yaml")
    problems = _problems(["harbour_copy"])["harbour_copy"]
    model, *addresses = problems
    assert f"{harbour / 'models' / 'harbour_air.yaml'}: key 'registered_model': 'cityfactory.harbour_air' is also" in model
    assert "of harbour_air (give each scenario its own name)" in model
    assert len(addresses) == 3 and all("key 'nodes'" in a and "give it a free port" in a for a in addresses)
    assert f"{harbour / 'fleets' / 'harbour_copy.yaml'}: key 'nodes' (node harbour_air-1): 127.0.0.1:" in addresses[0]
    assert "also the address of node harbour_air-1 of harbour_air" in addresses[0]


def test_a_misspelled_feature_is_named_against_the_marts_documented_columns(harbour):
    _edit(harbour / "models" / "harbour_air.yaml", lambda d: d["data"]["numeric"].__setitem__(2, "pm25_lag_3"))
    [problem] = _problems(check_dbt=True)["harbour_air"]
    assert f"{harbour / 'models' / 'harbour_air.yaml'}: key 'data.numeric.2': 'pm25_lag_3' is not a column" in problem
    assert "air_quality_features.yml" in problem and "did you mean 'pm25_lag_3h'?" in problem


def test_a_file_that_no_longer_matches_its_pin_fails_the_run_at_once_with_both_hashes(harbour, lake_uri, capsys):
    from airflow.sdk.exceptions import AirflowFailException
    from cityfactory.cli import main
    from cityfactory.config.scenarios import get_scenario
    from cityfactory.pipeline.context import RunContext
    from cityfactory.pipeline.ingest import land_batch
    from cityfactory.storage.lake import open_lake, sha256_file

    changed = harbour / "data" / "harbour_air_fixture" / "lighthouse.csv"
    changed.write_bytes(changed.read_bytes() + b"\r\n")
    actual = sha256_file(changed)
    ctx = RunContext(get_scenario("harbour_air"), open_lake(), "manual__pin", "ingest_stage.land")
    with pytest.raises(AirflowFailException, match=f"lighthouse.csv: sha256 is {actual}, expected [0-9a-f]{{64}}"):
        land_batch(ctx, ["2016-03-01"])  # AirflowFailException: not retried

    assert main(["run", "harbour_air", "--history"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"lighthouse.csv: sha256 is {actual}" in error


def test_a_scenario_belongs_to_one_of_the_citys_departments(harbour):
    from cityfactory.pipeline.preflight import usable_scenarios
    from cityfactory.settings import get_settings

    _edit(harbour / "scenarios" / "harbour_air.yaml", lambda d: d.update(domain="harbour"))
    [problem] = _problems()["harbour_air"]
    assert str(harbour / "scenarios" / "harbour_air.yaml") in problem and "key 'domain': 'harbour' is no department" in problem
    assert "one of: city_management, work_safety, environment, public_security, transport, governance" in problem
    usable, broken = usable_scenarios(get_settings().scenarios_dir)
    assert usable == [] and "no department" in broken["harbour_air.yaml"], "no DAG for it: an import error names it"


def test_a_dbt_selection_that_picks_nothing_or_cannot_be_read_is_named_with_dbts_words(harbour):
    _edit(harbour / "scenarios" / "harbour_air.yaml", lambda d: d["transform"].update(dbt_select="tag:harbour_air"))
    [problem] = _problems(check_dbt=True)["harbour_air"]
    assert f"{harbour / 'scenarios' / 'harbour_air.yaml'}: key 'transform.dbt_select': 'tag:harbour_air' selects no" in problem

    _edit(harbour / "scenarios" / "harbour_air.yaml", lambda d: d["transform"].update(dbt_select="taq:air_quality"))
    [problem] = _problems(check_dbt=True)["harbour_air"]
    assert "key 'transform.dbt_select': dbt could not list 'taq:air_quality'" in problem
    assert "'taq' is not a valid method name" in problem


@pytest.fixture
def dbt_commands(monkeypatch) -> list[str]:
    """The dbt commands this process invokes, in order (each still runs)."""
    from dbt.cli.main import dbtRunner

    commands, invoke = [], dbtRunner.invoke
    monkeypatch.setattr(dbtRunner, "invoke", lambda self, args, **kw: commands.append(args[0]) or invoke(self, args, **kw))
    return commands


def test_scenarios_validated_together_share_one_parse_of_the_dbt_project(harbour, dbt_commands, capsys):
    """Each scenario's selection is listed from the same parse: a ``dbt ls`` process per scenario
    parsed the whole project again (7 s each; 5 minutes for 40 scenarios)."""
    scenarios = harbour / "scenarios"
    _edit(shutil.copy(scenarios / "harbour_air.yaml", scenarios / "harbour_copy.yaml"),
          lambda d: d.update(name="harbour_copy", transform={**d["transform"], "dbt_select": "tag:traffic_flow"}))

    found = _problems(["harbour_air", "harbour_copy"], check_dbt=True)

    assert dbt_commands == ["parse", "ls", "ls"]
    assert not [problem for problem in found["harbour_air"] if "key 'transform." in problem]  # (its clashes aside)
    assert any("'air_quality_features' is not among the selected models (int_traffic_flow__hourly, "
               "stg_traffic_flow__observations, traffic_flow_features)" in p for p in found["harbour_copy"])
    assert capsys.readouterr().out == ""  # dbt's listing is not printed


def test_a_dbt_project_that_does_not_parse_is_told_to_every_scenario_from_one_parse(harbour, monkeypatch, dbt_commands):
    from cityfactory.settings import REPO_ROOT

    project = shutil.copytree(REPO_ROOT / "dbt", harbour / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
    (project / "models" / "marts" / "broken.yml").write_text("models:\n  - name: [unclosed\n")
    monkeypatch.setenv("CITYFACTORY_DBT_DIR", str(project))
    scenarios = harbour / "scenarios"
    _edit(shutil.copy(scenarios / "harbour_air.yaml", scenarios / "harbour_copy.yaml"), lambda d: d.update(name="harbour_copy"))

    found = _problems(["harbour_air", "harbour_copy"], check_dbt=True)

    assert dbt_commands == ["parse"]
    for name in ("harbour_air", "harbour_copy"):
        [told] = [p for p in found[name] if "transform.dbt_select" in p]
        assert "dbt could not list 'tag:air_quality'" in told and "broken.yml" in told
