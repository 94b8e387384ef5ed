"""Typed results: every result type round-trips through JSON (`Type.from_dict(x.to_dict()) == x`, arrays
compared with numpy) including NaN, empty arrays and skipped parts; malformed documents are refused with
a clear error; the one JSON converter; the model and SAE faces."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import core.analysis.results as results_module
import core.concepts.experiments
import core.concepts.readout
import core.harvest.splice
import core.interventions.ablation
import core.interventions.circles
import core.interventions.dial
import core.interventions.linear
import core.interventions.organism
import core.interventions.patching
import core.interventions.steering
import core.metrics.circles
import core.metrics.concepts
import core.metrics.crystals
import core.metrics.geometry
import core.metrics.intrinsic_dim
import core.metrics.probes
import core.metrics.spectral
import core.metrics.superposition
import core.metrics.toy
from core.analysis.results import Lobes, Skipped, SpectraByLayer
from core.jsonable import Result, ResultFormatError, jsonable, values_equal
from core.metrics.geometry import LobeAgreement

RESULT_MODULES = [results_module, core.metrics.circles, core.metrics.concepts, core.metrics.crystals,
                  core.metrics.geometry, core.metrics.intrinsic_dim, core.metrics.probes, core.metrics.spectral,
                  core.metrics.superposition, core.metrics.toy, core.concepts.experiments, core.concepts.readout,
                  core.harvest.splice, core.interventions.ablation, core.interventions.circles, core.interventions.dial,
                  core.interventions.linear, core.interventions.organism, core.interventions.patching,
                  core.interventions.steering]
RESULT_TYPES = sorted({cls for module in RESULT_MODULES for _, cls in inspect.getmembers(module, inspect.isclass)
                       if issubclass(cls, Result) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__},
                      key=lambda cls: cls.__name__)

# ------------------------------------------------------------------------------ strategies from the type hints
NAMES = st.text(alphabet="abcxyz_.0123456789 ", min_size=0, max_size=12)
FLOATS = st.floats(allow_infinity=False, width=64)  # NaN included: a `float` field reads null back as NaN
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)  # in `float | None`, NaN comes back as None
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3)


def _array(dtype: np.dtype) -> st.SearchStrategy:
    if dtype.kind == "f":
        elements = FLOATS
    elif dtype.kind == "b":
        elements = st.booleans()
    elif dtype.kind == "U":
        return hnp.arrays(np.dtype("<U8"), SHAPES, elements=st.text(alphabet="abc", max_size=8))
    else:
        elements = st.integers(-2**40, 2**40)
    return hnp.arrays(dtype, SHAPES, elements=elements)


def strategy_for(hint: typing.Any, optional: bool = False) -> st.SearchStrategy:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        has_none = type(None) in args
        options = [strategy_for(a, optional=has_none) for a in args if a is not type(None)]
        return st.one_of(*options, *([st.none()] if has_none else []))
    if isinstance(hint, type) and issubclass(hint, Result):
        return instances(hint)
    if hint is np.ndarray or origin is np.ndarray:
        from core.jsonable import _array_dtype

        return _array(_array_dtype(hint) or np.dtype(np.float64))
    if hint is float:
        return FINITE if optional else FLOATS
    if hint is int:
        return st.integers(-2**40, 2**40)
    if hint is bool:
        return st.booleans()
    if hint is str:
        return NAMES
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=2).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=2)
    if origin is dict:
        return st.dictionaries(NAMES, strategy_for(args[1]), max_size=2)
    raise AssertionError(f"no strategy for {hint!r}")


def instances(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: st.deferred(lambda h=hints[f.name]: strategy_for(h)) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


def test_every_view_and_part_is_a_result_type():
    names = {cls.__name__ for cls in RESULT_TYPES}
    views = {"SpectraByLayer", "CheckpointSpectrum", "SpectraOverCheckpoints", "SuperpositionByLayer", "ToyLab",
             "GeometryByLayer", "LobesView", "GroundTruthGeometry", "Circles", "Crystals", "Concepts", "Probes",
             "AllAnalyses", "Skipped"}
    metrics = {"AlphaReqResult", "SpectralSummary", "PhaseSegmentation", "EffectiveFeatures", "ConvergenceCurve",
               "InterferenceStats", "GalaxySpectrum", "ClusteringEntropy", "LobeAgreement", "Circularity",
               "CrystalQuality", "HierarchicalOrthogonality", "LayerProbes", "ProbeResult", "IntrinsicDimension",
               "ToyGeometry", "SparsitySweep"}
    others = {"EngelsResult", "ParkResult", "GurneeResult", "DroppedItem", "SpliceQuality"}  # concepts, harvest
    interventions = {"AblationResult", "TokenShift", "CycleFit", "CircleTurn", "RotationOutcome", "RotationExperiment",
                     "ProbeDirection", "FamilyOutcome", "ErasureExperiment", "ShiftOutcome", "ShiftExperiment",
                     "CycleInterventions", "LatitudeSite", "OrganismInterventions", "PatchingResult",
                     "SteeringFeature", "Completion", "SteeringResult", "TokenProb", "CircleDial"}
    assert views | metrics | others | interventions <= names
    for cls in RESULT_TYPES:  # frozen, and equality is Result's (arrays by value), not the dataclass default
        assert cls.__dataclass_params__.frozen and cls.__eq__ is Result.__eq__, cls.__name__


@pytest.mark.parametrize("cls", RESULT_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_round_trip_through_json(cls, data):
    value = data.draw(instances(cls))
    document = value.to_dict()
    text = json.dumps(document, allow_nan=False)  # strict JSON: NaN and empty matrices are encoded
    back = cls.from_dict(json.loads(text))
    assert back == value
    assert back.to_dict() == document


def test_round_trip_keeps_nan_empty_arrays_and_skipped_parts():
    agreement = LobeAgreement(ami=math.nan, null_mean=0.1, null_std=0.0, p_value=1.0, z_score=math.nan,
                              null=np.array([np.nan, 0.5]))
    lobes = Lobes(features=np.zeros(0, np.int64), n_lobes=2, affinity="phi", n_chunks=3,
                  labels=np.zeros(0, np.int64), geometric=np.zeros(0, np.int64), agreement=agreement,
                  lobe_sizes=np.array([0, 0]))
    back = Lobes.from_dict(json.loads(json.dumps(lobes.to_dict(), allow_nan=False)))
    assert back == lobes and math.isnan(back.agreement.ami)
    assert back.features.dtype == np.int64 and back.features.shape == (0,)  # still indexes
    assert np.isnan(back.agreement.null[0])
    matrix = np.zeros((0, 5))
    assert jsonable(matrix) == {"shape": [0, 5]}
    from core.metrics.probes import ProbeResult

    probe = ProbeResult(r2=0.5, r2_per_output=np.array([0.5]), alpha=1.0, n_train=3, n_test=0,
                        test_indices=np.zeros(0, np.int64), y_test=matrix, y_pred=matrix)
    assert ProbeResult.from_dict(probe.to_dict()).y_test.shape == (0, 5)
    # a union part: the dict's keys tell which type it is
    from core.analysis.results import LobesView

    for part in (lobes, Skipped("only 1 co-occurrence chunk(s)")):
        view = LobesView(hook_name="blocks.0.hook_resid_post", lobes=part, key="k")
        assert LobesView.from_dict(view.to_dict()) == view
        assert type(LobesView.from_dict(view.to_dict()).lobes) is type(part)


def test_equality_compares_arrays_by_value():
    a = LobeAgreement(ami=0.5, null_mean=0.1, null_std=0.2, p_value=0.01, z_score=2.0, null=np.array([0.1, np.nan]))
    assert a == dataclasses.replace(a, null=np.array([0.1, np.nan]))
    assert a != dataclasses.replace(a, null=np.array([0.1, 0.2]))
    assert a != dataclasses.replace(a, null=np.array([0.1]))
    assert a != dataclasses.replace(a, ami=0.6)
    assert values_equal(np.array(["x"]), np.array(["x"])) and not values_equal((1,), [1])


def test_malformed_documents_are_refused_with_the_field_named():
    good = Skipped("why").to_dict()
    assert Skipped.from_dict(good) == Skipped("why")
    with pytest.raises(ResultFormatError, match="unknown field"):
        Skipped.from_dict({**good, "extra": 1})
    with pytest.raises(ResultFormatError, match="missing"):
        Skipped.from_dict({})
    with pytest.raises(ResultFormatError, match="Skipped.reason"):
        Skipped.from_dict({"reason": 3})
    agreement = LobeAgreement(ami=0.5, null_mean=0.1, null_std=0.2, p_value=0.01, z_score=2.0,
                              null=np.array([0.1])).to_dict()
    with pytest.raises(ResultFormatError, match="LobeAgreement.null"):
        LobeAgreement.from_dict({**agreement, "null": [[1.0], [2.0, 3.0]]})  # ragged
    with pytest.raises(ResultFormatError, match="LobeAgreement.n"):
        LobeAgreement.from_dict({**agreement, "null": "not a list"})
    with pytest.raises(ResultFormatError, match="expected a JSON object"):
        SpectraByLayer.from_dict([])


def test_the_one_json_converter():
    assert jsonable({"a": (1, np.float32(0.5)), "s": {3, 1}, "p": Path("/x"), "b": np.bool_(True),
                     "nan": math.nan, "inf": -math.inf, "i": np.int64(2)}) == \
        {"a": [1, 0.5], "s": [1, 3], "p": "/x", "b": True, "nan": None, "inf": None, "i": 2}
    assert jsonable(object()).startswith("<object")
    with pytest.raises(TypeError, match="object"):
        jsonable({"x": object()}, strict=True)  # artifact keys must not depend on a repr
    assert jsonable(Skipped("r")) == {"reason": "r"}


def test_the_old_converters_are_gone():
    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("core/**/*.py"), *root.glob("app/**/*.py")]:
        text = path.read_text()
        for name in ("def _plain(", "def _json_number(", "def json_number(", "def finite_or_none(", "def as_result(",
                     "def dataclass_fields(", "class _ToDict", "class _Result", "def _to_json(", "def _from_json("):
            assert name not in text, f"{path}: {name}"
        if path.name != "jsonable.py":  # one Result base: core.jsonable's
            assert "class Result" not in text, path


def test_harvest_settings_are_a_result_and_keep_their_key_form():
    from core.harvest.settings import HarvestSettings

    settings = HarvestSettings(sites=("blocks.0.hook_resid_post",), max_tokens=100, hist_min=1e-4)
    document = settings.to_dict()
    assert document["sites"] == ["blocks.0.hook_resid_post"] and document["hist_min"] == 1e-4  # the harvest key's input
    assert HarvestSettings.from_dict(json.loads(json.dumps(document))) == settings
    assert hash(HarvestSettings()) == hash(HarvestSettings())  # still usable as a cache key


# ---------------------------------------------------------------------------------------------- cache
def test_a_stale_stored_document_is_computed_afresh(tmp_path):
    from core.analysis.keys import analysis_key, cached_result
    from core.analysis.results import LobesView
    from core.store import ArtifactStore

    store = ArtifactStore(tmp_path)
    parts = {"x": 1}
    key = analysis_key("probe_view", **parts)
    store.save(key, {}, {"result": {"old": "shape"}})  # written by other code
    calls = []

    def compute() -> LobesView:
        calls.append(1)
        return LobesView(hook_name="blocks.0.hook_resid_post", lobes=Skipped("fresh"))

    first = cached_result(store, "probe_view", parts, compute, LobesView)
    assert first.lobes == Skipped("fresh") and first.key == key and calls == [1]
    assert cached_result(store, "probe_view", parts, compute, LobesView) == first and calls == [1]


# ---------------------------------------------------------------------------------------------- faces
def test_loaded_model_and_sae_have_the_faces(tiny_model, tiny_sae_factory):
    from core.sources.faces import ModelFace, SAEFace
    from core.sources.saes import wrap_sae

    assert isinstance(tiny_model, ModelFace)
    sae = wrap_sae(tiny_sae_factory())
    assert isinstance(sae, SAEFace)
    assert not isinstance(object(), ModelFace) and not isinstance(tiny_model, SAEFace)


def test_source_kinds_are_the_literals():
    from core.sources import corpus, models, saes
    from core.sources.faces import CorpusSource, ModelSource, SAESource

    assert typing.get_args(ModelSource) == models.SOURCES
    assert typing.get_args(SAESource) == saes.SOURCES
    assert typing.get_args(CorpusSource) == corpus.SOURCES
    for spec in (models.ModelSpec, saes.SAESpec, corpus.CorpusSpec):
        assert typing.get_origin(typing.get_type_hints(spec)["source"]) is typing.Literal
