"""The README documents every setting and the two commands."""

from technic_stream.config import ENV_PREFIX, Settings
from tests.conftest import ROOT


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"{ENV_PREFIX}{name.upper()}"
        for name in Settings.model_fields
        if f"`{ENV_PREFIX}{name.upper()}`" not in readme
    ]
    assert missing == []


def test_the_two_commands_come_first():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make demo") < readme.index("## Configuration")
    assert readme.index("make test") < readme.index("## Configuration")


def test_the_readme_rule_examples_parse():
    from technic_stream.rules import parse_rule

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Rules") :]
    block = section.split("```")[1]
    examples = [line for line in block.strip().splitlines() if line]
    assert len(examples) == 5
    for text in examples:
        parse_rule(text)
