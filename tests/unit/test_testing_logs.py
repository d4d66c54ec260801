"""Log lines read while the process still writes them: a line cut in two is read next time."""

from pathlib import Path

from worker.testing.logs import json_events


def test_a_line_still_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    log.write_text('{"event": "a"}\nnot json\n{"event": "b", "rows": {"ins')
    assert json_events(log) == [{"event": "a"}]
    with log.open("a") as fh:
        fh.write('erted": 1}}\n')
    assert json_events(log) == [{"event": "a"}, {"event": "b", "rows": {"inserted": 1}}]
    assert json_events("") == []
