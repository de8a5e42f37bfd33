"""`twinframe report` end to end on one model (the level checks stubbed to one record, the L5
curve and the framework switch real but short): the script's wiring, HTML and JSON output."""

import json

from twinframe import cli
from twinframe.parity import checks
from twinframe.parity.compare import Record


def test_report_writes_html_and_json(tmp_path, monkeypatch, capsys):
    def one_record(spec, cfg, run, only=None, progress=None):
        return [Record(spec.name, "L0", "stub", 0.0, 0.0, "exact", True)]

    monkeypatch.setattr(checks, "run", one_record)
    rc = cli.main(["report", "hrm", "--out", str(tmp_path), "--curve", "2", "--switch", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads((tmp_path / "report.json").read_text())
    text = json.dumps(data)
    assert "curve@lr0.0001" in text and "switch.torch->jax" in text
    assert (tmp_path / "index.html").is_file()
