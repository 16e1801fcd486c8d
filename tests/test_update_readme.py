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
