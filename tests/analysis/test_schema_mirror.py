"""analysis keeps its own copy of the records columns (it may not import experiments); it must equal the schema."""

from __future__ import annotations

from erasablemask.analysis import schema as mirror
from erasablemask.experiments.evaluation import records


def test_analysis_reads_exactly_the_records_schema_columns_types_and_version():
    assert list(mirror.RECORDS_COLUMNS) == list(records.RECORDS_COLUMNS), (
        "records columns changed: update analysis/schema.py RECORDS_COLUMNS (and bump its version)")
    for f in records.RECORDS_SCHEMA:
        assert mirror.RECORDS_COLUMNS[f.name] == f.type, f"column {f.name}: update analysis/schema.py"
    assert mirror.RECORDS_SCHEMA_VERSION == records.RECORDS_SCHEMA_VERSION
    assert mirror.VERSION_KEY == records.VERSION_KEY
    assert mirror.KINDS == records.KINDS and mirror.ROLES == records.ROLES


def test_flag_definitions_name_the_columns_metrics_compares():
    # metrics.success_flags compares (cos, tau) pairs; the analysis copy must name the same pairs and sense.
    assert mirror.FLAGS == {"attack_success": ("cos_target", "tau1", True),
                            "erasion_success": ("cos_restored_target", "tau2", False),
                            "identity_restored": ("cos_restored_source", "thr_far_0p01", True)}
    assert set(mirror.FLAGS) <= set(records.RECORDS_COLUMNS)
    assert all(c in records.RECORDS_COLUMNS and t in records.RECORDS_COLUMNS for c, t, _ in mirror.FLAGS.values())
