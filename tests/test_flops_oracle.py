"""`count` reproduces, exactly, the FLOPs and params it gave before it read the flat graph.

The oracle, tests/data/flops_oracle.json, was computed by the previous counter (a walk over
Keras' private node graph, commit 56db325), not by the code under test: totals and every
per-call row (order, class, MACs, params, output shape; names for the zoo) of every zoo model
and of keras.applications nets (weights=None) used in tests/test_flops.py and
tests/test_surgery_applications.py. Every FLOPs figure in docs/ stays reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest
from asp_export.models import create_model

from asp_export.surgery.flops import count

ORACLE = json.loads((Path(__file__).parent / "data" / "flops_oracle.json").read_text())
TOTALS = ("flops", "macs", "params", "trainable_params")


def _figures(report, names: bool) -> dict:
    rows = [
        ([row.name] if names else []) + [row.class_name, row.macs, row.params, list(row.output_shape)]
        for row in report.per_layer
    ]
    return {**{key: getattr(report, key) for key in TOTALS}, "rows": rows}


@pytest.mark.parametrize("name", sorted(ORACLE["zoo"]))
def test_zoo_model_counts_as_before(name):
    assert _figures(count(create_model(name)), names=True) == ORACLE["zoo"][name]


@pytest.mark.parametrize("key", sorted(ORACLE["applications"]))
def test_keras_application_counts_as_before(key):
    name, side, classes = key.rsplit("-", 2)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(int(side), int(side), 3), classes=int(classes)
    )
    assert _figures(count(model), names=False) == ORACLE["applications"][key]


def test_the_oracle_covers_every_zoo_model():
    from asp_export.models import list_models

    assert sorted(ORACLE["zoo"]) == sorted(list_models())
