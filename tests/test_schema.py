"""config/schema.yaml and the README parameter reference are generated from the parameter dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from zarrseg.errors import ConfigError
from zarrseg.params import from_dict
from zarrseg.schema import dump, params_class, readme_with_reference, sections

SECTIONS = sorted(sections())  # every stage and every learning method's section

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def test_committed_schema_is_generated_from_dataclasses():
    assert SCHEMA.read_text() == dump(), "config/schema.yaml is stale: run `make docs`"


def test_readme_parameter_reference_is_current():
    readme = (REPO / "README.md").read_text()
    assert readme == readme_with_reference(readme), "README parameter reference is stale: run `make docs`"


def test_default_config_validates_and_loads_into_every_stage():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA), set_default=False)
    from zarrseg.learn.registry import all_methods

    # their training data lists have no default
    needs_inputs = {"train", "pretrain", "finetune"} | {m.config_section for m in all_methods() if m.data == "labelled"}
    for stage in sorted(set(SECTIONS) - needs_inputs):
        from_dict(params_class(stage), config.get(stage) or {}, where=stage)


@pytest.mark.parametrize("stage", SECTIONS)
def test_typo_in_any_stage_section_is_rejected_at_start(stage):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config[stage] = {"definitely_not_a_key": 1}
    with pytest.raises(WorkflowError, match="definitely_not_a_key"):
        validate(config, str(SCHEMA), set_default=False)


def test_wrong_type_is_rejected():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["segment"] = {"beta": "high"}
    with pytest.raises(WorkflowError):
        validate(config, str(SCHEMA), set_default=False)


@pytest.mark.parametrize(
    ("stage", "values"),
    [
        ("panels", {"percentiles": [99.0, 1.0]}),
        ("features", {"preprocess": {"percentiles": [0.0, 120.0]}}),
        ("predict", {"normalization": {"method": "percentile", "lower": 50.0, "upper": 50.0}}),
    ],
)
def test_percentile_ranges_are_checked_in_every_stage(stage, values):
    """One range check (params.check_percentiles) serves every stage with a percentile range."""
    with pytest.raises(ConfigError, match=r"must satisfy 0 <= low < high <= 100"):
        from_dict(params_class(stage), values, where=stage)
