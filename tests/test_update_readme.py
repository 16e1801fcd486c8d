"""README tables are copies of the files in results/, filled in by experiments/readme.py."""

from experiments import readme as update_readme


def test_include_blocks_are_filled_from_files(tmp_path):
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    text = "x\n<!-- include t.md -->\nstale\n<!-- end include -->\ny\n<!-- include none.md -->\n<!-- end include -->\n"
    out = update_readme.render(text, tmp_path)
    assert out == ("x\n<!-- include t.md -->\n| a |\n|---|\n| 1 |\n<!-- end include -->\ny\n"
                   "<!-- include none.md -->\n*(none.md has not been generated yet)*\n<!-- end include -->\n")
    assert update_readme.render(out, tmp_path) == out  # idempotent


def test_readme_is_current():
    assert update_readme.main(["--check"]) == 0


def test_command_log_is_current():
    from experiments import commands

    assert commands.main(["--check"]) == 0


def test_command_log_lists_runner_invocations(tmp_path):
    from experiments import commands

    log = tmp_path / "results" / "p" / "reproduce-log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"command": ["python", "reproduce.py", "table1", "--preset", "p"], "finished": "T", '
                   '"wall_s": 12.5, "trained": 3, "failed": 0}\nnot json\n')
    text = commands.render(tmp_path)
    assert "| T | `python reproduce.py table1 --preset p` | 12.5 | 3 | 0 |" in text
    assert "unreadable line in reproduce-log.jsonl" in text
