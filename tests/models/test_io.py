"""models/atomic_files.py, models/state_dicts.py: atomic writes and checked state-dict loading."""

from __future__ import annotations

import stat

import pytest
import torch
from torch import nn

from erasablemask.models.atomic_files import atomic_dir, atomic_path, write_text_atomic
from erasablemask.models.state_dicts import StateDictMismatch, load_state_dict_checked, read_state_dict, strip_prefix


def test_atomic_path_publishes_only_complete_files(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    write_text_atomic(dest, "first")
    assert dest.read_text() == "first"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644  # readable by others, unlike mkstemp's 0600

    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(dest) as tmp:
            tmp.write_text("half of the sec")
            raise RuntimeError("disk full")
    assert dest.read_text() == "first"  # the old file is untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.txt"]  # no temporary left behind


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "stage1" / "final"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("old")
    assert [p.name for p in dest.iterdir()] == ["a.txt"]

    with pytest.raises(RuntimeError, match="worker died"):
        with atomic_dir(dest) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("worker died")
    assert [p.name for p in dest.iterdir()] == ["a.txt"]  # the old folder is untouched

    with atomic_dir(dest) as tmp:
        (tmp / "b.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["b.txt"]  # replaced whole: no file of the old folder left
    assert [p.name for p in dest.parent.iterdir()] == ["final"]  # no temporary or old folder left behind


def test_checked_loading_lists_every_problem_and_leaves_the_module_untouched():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()}
    del state["0.bias"]
    state["0.weight"] = torch.zeros(3, 5)
    state["extra"] = torch.zeros(1)
    with pytest.raises(StateDictMismatch) as info:
        load_state_dict_checked(model, state, source="file 'w.pt'", fix="Use the matching model.")
    msg = str(info.value)
    assert "file 'w.pt' does not fit Sequential" in msg and "Use the matching model." in msg
    assert "1 missing [0.bias]" in msg and "1 unexpected [extra]" in msg
    assert "0.weight: file (3, 5) vs model (3, 4)" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checked_loading_tolerates_only_what_it_is_told_to(tmp_path):
    src = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    state = strip_prefix({f"module.{k}": v for k, v in src.state_dict().items()})
    del state["1.num_batches_tracked"]
    with pytest.raises(StateDictMismatch, match=r"1 missing \[1.num_batches_tracked\]"):
        load_state_dict_checked(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), state, source="s", fix="")
    dst = load_state_dict_checked(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), state, source="s", fix="",
                                  keep_missing=lambda k: k.endswith("num_batches_tracked"))
    assert torch.equal(dst[0].weight, src[0].weight)

    torch.save(src.state_dict(), tmp_path / "w.pt")
    assert torch.equal(read_state_dict(tmp_path / "w.pt")["0.weight"], src[0].weight)
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"weights_only=True"):
        read_state_dict(tmp_path / "module.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_state_dict(tmp_path / "nope.pt")
