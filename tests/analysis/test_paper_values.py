"""The paper's published values: complete, with provenance, and equal to the paper's text where it is at hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from erasablemask.analysis import paper_values as pv

PAPER = Path(__file__).resolve().parents[3] / "shared" / "paper" / "ErasableMask.txt"


def test_every_table_has_its_cells_and_provenance():
    frame = pv.paper_values()
    assert frame.groupby("table").size().to_dict() == {"II": 120, "III": 36, "IV": 18, "V": 288, "VI": 24, "VII": 12}
    assert frame["source"].str.startswith("Table ").all() and frame["row_key"].notna().all()
    one = frame[(frame.table == "II") & (frame.dataset == "celebahq") & (frame.row_key == "erasablemask")
                & (frame.model == "facenet")].set_index("metric")["value"].to_dict()
    assert one == {"asr": 64.00, "esr": 96.67}
    crop = frame[(frame.table == "V") & (frame.block == "center_crop") & (frame.row_key == "erasablemask")
                 & (frame.model == "irse50") & (frame.metric == "esr")]
    assert crop["value"].tolist() == [4.9] and "'Central Crop' block" in crop["source"].iloc[0]
    assert set(frame.loc[frame.table == "VII", "row_key"]) == {"ensemble", "meta_auxiliary"}
    assert frame.loc[frame.table == "II", "dataset_note"].isna().all()
    assert frame.loc[frame.table != "II", "dataset_note"].str.contains("not stated").all()


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w\[])\d+\.\d+|(?<![\w\[.])\d+(?![\w\].])", re.sub(r"</?u>", "", line))]


@pytest.mark.skipif(not PAPER.is_file(), reason=f"the paper's text is not at {PAPER}")
def test_every_transcribed_row_is_a_row_of_the_papers_text():
    lines = PAPER.read_text().splitlines()
    blocks = [*pv._TABLE_II.values(), *pv._TABLE_V.values(), pv._TABLE_III, pv._TABLE_IV, pv._TABLE_VI, pv._TABLE_VII]
    for block in blocks:
        for label, values in pv._rows(block):
            numbers = [v for v in values if v is not None]
            first = label.split(" [")[0].split(" (")[0].replace(" ", "")
            hits = [ln for ln in lines if first in ln.replace(" ", "") and _numbers(ln)[-len(numbers):] == numbers]
            assert hits, f"row {label!r} {numbers} is not a line of the paper's text"
