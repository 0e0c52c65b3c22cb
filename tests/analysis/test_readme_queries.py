"""The README's "Analysis" queries run on a collected dataset and answer what they say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from _synthetic_records import synthetic_records, write_run_dir

from erasablemask.analysis.collect import collect_run_dirs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_pandas_queries_run_on_a_collected_dataset(tmp_path: Path):
    section = README.read_text().split("## Analysis", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    for name, gamma in (("a", 0.05), ("b", 0.2)):
        write_run_dir(tmp_path / "runs", name, synthetic_records(name), params={"protection": {"gamma": gamma}})
    collect_run_dirs([tmp_path / "runs"], tmp_path / "ds")
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(code.replace("DATASET", str(tmp_path / "ds")), scope)  # noqa: S102 (the README's own code)
    swept = scope["swept"]
    assert set(swept["params.protection.gamma"]) == {"0.05", "0.2"} and set(swept["model"]) == {"bb_one", "bb_two"}
    assert "attack_success" in out.getvalue() and "jpeg" in out.getvalue()
