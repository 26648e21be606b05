"""Which flags differ between regions: the pure comparison and its table."""

from __future__ import annotations

from skylift.platform.flags import Flag
from skylift.platform.flags_diff import diff_flags, table


def flags(*items: Flag) -> dict[str, Flag]:
    return {f.name: f for f in items}


EU = flags(Flag("checkout", True, 10000), Flag("new-ui", True, 3000, "the new UI"))
US = flags(Flag("checkout", True, 10000), Flag("new-ui", True, 5000, "The new UI"))


def test_agreeing_regions_have_no_difference() -> None:
    assert diff_flags({"eu": EU, "asia": dict(EU)}) == []
    assert table(["eu", "asia"], [], descriptions=False) == "flags agree in eu, asia"


def test_missing_enabled_and_rollout_are_differences_each_named() -> None:
    asia = flags(Flag("checkout", False, 10000), Flag("new-ui", True, 3000), Flag("dark", True, 1))
    found = diff_flags({"eu": EU, "us": US, "asia": asia})
    assert [(d.name, d.fields) for d in found] == [
        ("checkout", ("enabled",)),
        ("dark", ("missing",)),
        ("new-ui", ("rollout",)),
    ]
    dark = found[1].as_dict()
    assert dark["regions"] == {
        "eu": None,
        "us": None,
        "asia": {"enabled": True, "rollout": 0.01, "description": ""},
    }
    lines = table(["eu", "us", "asia"], found, descriptions=False).splitlines()
    assert lines[0].split() == ["FLAG", "eu", "us", "asia", "DIFFERS", "IN"]
    assert lines[1].split() == ["checkout", "on", "100%", "on", "100%", "off", "100%", "enabled"]
    assert lines[2].split() == ["dark", "-", "-", "on", "0.01%", "missing"]
    assert lines[-1] == "3 flag(s) differ between eu, us, asia"


def test_descriptions_count_only_when_asked() -> None:
    assert [d.name for d in diff_flags({"eu": EU, "us": US})] == ["new-ui"]
    only_text = {"eu": EU, "us": {**US, "new-ui": Flag("new-ui", True, 3000, "The new UI")}}
    assert diff_flags(only_text) == []
    found = diff_flags(only_text, descriptions=True)
    assert [d.fields for d in found] == [("description",)]
    assert "eu: 'the new UI' | us: 'The new UI'" in table(["eu", "us"], found, descriptions=True)
