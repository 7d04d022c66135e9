"""The mean forecast of the families' best trials, kept when it beats the winner alone on validation;
each member refitted with ``training.refit_seeds`` seeds (a bag), whose mean steadies the networks.

Families err differently (trees cut the hour of the week sharply, networks follow the recent hours
smoothly), so their mean is often better than either; so, less often, is the mean of a family's best
few trials (``training.trials_per_family``), whose settings differ. Whether it is, is judged as the
search judges trials, so that the choice carries to the test year as theirs does: each candidate
trial is fitted again on every validation fold (rolling origin), and every combination holding the
search's winner (some families, each by its best 1..``trials_per_family`` trials) is scored by the
mean of its folds' scores; the winner alone stays unless a combination scores strictly better, and a
deeper one must beat the shallower ones. The test rows are never looked at.

At the edge an ensemble is one ONNX graph: each member's graph under its own prefix, all reading the
one ``features`` input, and a ``Mean`` node giving ``prediction``, so the contract does not change.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import numpy as np

from cityfactory.compression.onnx_export import OUTPUT, check_parity, run, session
from cityfactory.compression.onnx_export import export as export_network
from cityfactory.compression.variants import Variant, measure
from cityfactory.tasktypes.base import Combination, Examples
from cityfactory.tasktypes.forecast import families, trees
from cityfactory.tasktypes.forecast.data import ForecastExamples
from cityfactory.tasktypes.forecast.metrics import edge_scores
from cityfactory.tasktypes.forecast.spec import ForecastSpec


def candidates(rankings: list[list[dict]], depth: int) -> list[Combination]:
    """The winner alone first, then every set of families holding the winner's, each family by its
    best 1..``depth`` trials (the same number for all; a family with fewer gives what it has),
    shallower first; each set of trials once."""
    found: dict[tuple, Combination] = {}
    for k in range(1, depth + 1):
        for size in range(len(rankings)):
            for rest in itertools.combinations(rankings[1:], size):
                members = [t for ranked in (rankings[0], *rest) for t in ranked[:k]]
                found.setdefault(tuple(t["run_id"] for t in members), Combination(members))
    return list(found.values())


def combine(kind, spec: ForecastSpec, examples: Examples, rankings: list[list[dict]], metric: str,
            seed: int) -> Combination:
    """The candidate (``candidates``) with the best mean validation score over the folds; the
    winner alone without a strictly better one."""
    scored = candidates(rankings, spec.training.trials_per_family)
    if len(scored) < 2:
        return scored[0]  # the winner alone: nothing to compare
    folds = [examples, *examples.earlier_folds()]
    pool = {t["run_id"]: t for c in scored for t in c.members}
    predictions = {run_id: [kind.fit(t["family"], spec, t["params"], fold, metric, seed).model.predict_array(
        fold.x_validation) for fold in folds] for run_id, t in pool.items()}
    better = kind.metrics[metric].better

    def score(members: list[dict]) -> float:
        return statistics.fmean(
            kind.score(spec, fold.y_validation, np.mean([predictions[t["run_id"]][k] for t in members], axis=0))[metric]
            for k, fold in enumerate(folds))

    scores = {c.name: score(c.members) for c in scored}
    best = scored[0]  # the winner alone
    for candidate in scored[1:]:
        if better(scores[candidate.name], scores[best.name]):
            best = candidate
    return Combination(bagged(best.members, spec.training.refit_seeds, seed), scores)


def bagged(members: list[dict], seeds: int, seed: int) -> list[dict]:
    """Each member ``seeds`` times, with the seeds its refits take (the first: the search's own)."""
    return [{**t, "refit_seed": seed + k} for t in members for k in range(seeds)]


def refit(spec: ForecastSpec, combination: Combination, examples: ForecastExamples, seed: int) -> families.Forecaster:
    """Every member trained again on the seen rows (with gaps, if its family tolerates them) for
    its own best step, with its own seed where it has one (``bagged``); one member is itself."""
    members = [families.refit(t["family"], spec, t["params"], t["best_step"],
                              *examples.seen_rows(t["family"] in families.TOLERATE_GAPS), t.get("refit_seed", seed))
               for t in combination.members]
    if len(members) == 1:
        return members[0]
    return families.Forecaster(combination.family, {f"{t['family']} {t['run_id']}": t["params"]
                                                    for t in combination.members}, members=members)


def export(forecaster: families.Forecaster, n_features: int, path: Path) -> Path:
    """The members' fp32 graphs as one: shared input, each member's names prefixed, their mean out."""
    import onnx
    from onnx import helper

    graphs, nodes, initializers, functions, opsets = [], [], [], [], {}
    for i, member in enumerate(forecaster.members):
        part = path.with_name(f"{path.stem}.member{i}.onnx")
        if member.family == "lightgbm":
            trees.export(member.model, member.residual_index, n_features, part, member.iterations)
        else:
            export_network(member.model, n_features, part)
        model = onnx.compose.add_prefix(onnx.load(str(part)), f"m{i}_", rename_inputs=False)
        part.unlink()
        graphs.append(model.graph)
        nodes += model.graph.node
        initializers += model.graph.initializer
        functions += model.functions
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    nodes.append(helper.make_node("Mean", [g.output[0].name for g in graphs], [OUTPUT]))
    graph = helper.make_graph(nodes, path.stem, [graphs[0].input[0]],
                              [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [None])], initializers)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                               functions=functions)
    onnx.checker.check_model(merged)
    path.write_bytes(merged.SerializeToString())
    return path


def build_and_measure(forecaster: families.Forecaster, n_features: int, x_test: np.ndarray, y_test: np.ndarray,
                      workdir: Path, parity_tolerance: float) -> tuple[list[Variant], float]:
    """The mean in Python, its one-graph fp32 export and int8 dynamic quantization of that graph
    (the networks' Gemm weights; trees keep their float thresholds), side by side."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = export(forecaster, n_features, workdir / "fp32.onnx")
    parity = check_parity(run(fp32, x_test), forecaster.predict_array(x_test), parity_tolerance)
    paths = {"onnx_fp32": fp32}
    for reduce_range in (False, True):
        name = "int8_dynamic_reduce_range" if reduce_range else "int8_dynamic"
        paths[name] = workdir / f"{name}.onnx"
        quantize_dynamic(fp32, paths[name], weight_type=QuantType.QInt8, reduce_range=reduce_range)
    variants = [measure("ensemble_native", None, forecaster.predict_array, x_test, y_test, edge_scores)]
    for name, path in paths.items():
        sess = session(path)
        variants.append(measure(name, path, lambda x, s=sess: run(s, x), x_test, y_test, edge_scores))
    return variants, parity
