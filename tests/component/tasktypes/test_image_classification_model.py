"""The image classifier on real ELPV cells (three days of the line, 360 images): the data gates
hold (no near-duplicate across splits, every class in every split), a small CNN beats the
majority class, the int8 model is measured as a file against fp32 within the budget (or fp32
ships and the stage says why), and the calibration set is balanced and the same every time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from cityfactory.compression import gate
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry
from cityfactory.ingestion import replay
from cityfactory.ingestion.image_drops import ingest_image_days
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.storage.gold import read_gold
from cityfactory.storage.lake import open_lake
from cityfactory.tasktypes import load_model_spec, task_type_of
from cityfactory.tasktypes.image_classification import edge
from cityfactory.transform.dbt import duckdb_path, run_dbt
from cityfactory.transform.gold import export_gold

SCENARIO = get_scenario("solar_cells")
SMALL = {"input_size": 48, "width": 8, "blocks": 3, "dropout": 0.1, "epochs": 6, "patience": 6, "batch_size": 32,
         "learning_rate": 0.004, "weight_decay": 0.0001}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    home = tmp_path_factory.mktemp("cells")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYFACTORY_LAKE_URI", (home / "lake").as_uri())
        lake = open_lake()
        first, _ = replay.history_interval(SCENARIO)
        days = [first + dt.timedelta(days=i) for i in range(3)]
        replay.replay(SCENARIO, lake, days)
        ingest_days(SCENARIO, lake, days, LedgerEntry("ingest", Kind.BATCH_INGESTED), ingest_image_days)
        run_dbt(SCENARIO, Path(lake.root), full_refresh=True)
        export_gold(SCENARIO, lake, None)
        spec = load_model_spec("solar_cells")
        gold = read_gold(lake, "solar_cells")
        yield spec, gold, task_type_of(spec).examples(spec, gold)
        duckdb_path(SCENARIO).unlink(missing_ok=True)


def test_the_split_keeps_near_duplicates_together_and_every_class_everywhere(examples):
    spec, gold, e = examples
    labelled = gold[gold[spec.data.usable]]
    bits = labelled["phash_bits"].to_numpy().astype(np.uint64)
    close = np.unpackbits((bits[:, None] ^ bits[None, :]).view(np.uint8), axis=-1).reshape(len(bits), len(bits), -1)
    near = (close.sum(-1) <= 4) & ~np.eye(len(bits), dtype=bool)
    splits = labelled[spec.data.split].to_numpy()
    assert not (near & (splits[:, None] != splits[None, :])).any()
    for y in (e.y_train, e.y_validation, e.y_test):
        assert set(np.unique(y)) == {0, 1}
    assert e.x_train.shape[1:] == (1, spec.data.size, spec.data.size) and 0 <= e.x_train.min() <= e.x_train.max() <= 1


def test_a_small_cnn_beats_the_majority_class_and_int8_is_measured_against_fp32(examples, tmp_path):
    spec, _, e = examples
    kind = task_type_of(spec)
    trained = kind.fit("separable_cnn", spec, SMALL, e, "accuracy", seed=3)
    judged = kind.judge(spec, e, trained.model.predict_array(e.x_test))
    assert judged.metrics["model"]["accuracy"] > judged.metrics["majority"]["accuracy"]
    assert {"class_functional", "class_defective", "cell_type_mono"} <= set(judged.by_group)

    variants, parity = kind.compress(spec, trained.model, e, tmp_path, parity_tolerance=1e-3)
    by_name = {v.name: v for v in variants}
    assert parity <= 1e-3 and set(by_name) == {"torch_eager_fp32", "onnx_fp32", "int8_static_qdq"}
    int8, fp32 = by_name["int8_static_qdq"], by_name["onnx_fp32"]
    assert int8.size_bytes < fp32.size_bytes
    assert abs(int8.quality["accuracy"] - fp32.quality["accuracy"]) <= 3.0  # points, on ~70 test images
    also = kind.compression_also(spec)
    chosen = gate.choose(variants, "accuracy", 0.005, True, also=also, must_be_faster=True, fallback=True)
    refused = gate.refusals(variants, "accuracy", 0.005, True, also, must_be_faster=True)
    assert (chosen.name == "int8_static_qdq") == ("int8_static_qdq" not in refused)
    if chosen.name == "onnx_fp32":  # fp32 ships, and the refusal names the budget or the speed
        assert "budget" in refused["int8_static_qdq"] or "not faster" in refused["int8_static_qdq"]


def test_the_calibration_set_is_balanced_and_fixed_by_content(examples):
    spec, _, e = examples
    chosen, facts = edge.calibration_set(spec, e)
    again, same = edge.calibration_set(spec, e)
    counts = facts["calibration"]["per_class"]
    assert list(chosen) == list(again) and facts == same
    assert counts == {"functional": spec.calibration.per_class, "defective": min(spec.calibration.per_class,
                                                                                 int((e.y_train == 1).sum()))}
    assert len(facts["calibration"]["fingerprint"]) == 64
