"""Organisation identifiers: levels, parents, short forms, rejections, and property-based round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bus.errors import InvalidOrganIdError
from bus.organ_id import OrganId, OrganKind, OrganLevel, normalise_organ_id


@pytest.mark.parametrize(
    ("text", "level", "kind", "parent"),
    [
        ("000.00.00.H41", OrganLevel.TOP, OrganKind.PROVINCE_COMMITTEE, None),
        ("000.00.12.H41", OrganLevel.LEVEL2, OrganKind.PROVINCE_COMMITTEE, "000.00.00.H41"),
        ("000.05.12.H41", OrganLevel.LEVEL3, OrganKind.PROVINCE_COMMITTEE, "000.00.12.H41"),
        ("001.05.12.H41", OrganLevel.LEVEL4, OrganKind.PROVINCE_COMMITTEE, "000.05.12.H41"),
        ("000.05.00.H41", OrganLevel.LEVEL3, OrganKind.PROVINCE_COMMITTEE, "000.00.00.H41"),
        ("000.00.00.G22", OrganLevel.TOP, OrganKind.MINISTRY, None),
        ("000.00.00.K41", OrganLevel.TOP, OrganKind.PROVINCE_COUNCIL, None),
        ("000.00.01.A53", OrganLevel.LEVEL2, OrganKind.OTHER, "000.00.00.A53"),
    ],
)
def test_level_kind_and_parent(text: str, level: OrganLevel, kind: OrganKind, parent: str | None) -> None:
    organ = OrganId.parse(text)
    assert str(organ) == text
    assert organ.level is level
    assert organ.kind is kind
    assert (str(organ.parent) if organ.parent else None) == parent
    assert str(organ.root) == "000.00.00." + text[-3:]


def test_ancestors_and_is_within() -> None:
    commune = OrganId.parse("001.05.12.H41")
    assert [str(a) for a in commune.ancestors()] == ["000.05.12.H41", "000.00.12.H41", "000.00.00.H41"]
    assert commune.is_within(OrganId.parse("000.00.12.H41"))
    assert commune.is_within(commune)
    assert not commune.is_within(OrganId.parse("000.00.13.H41"))
    assert not OrganId.parse("000.00.12.H41").is_within(commune)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("28.22.H17", "000.28.22.H17"),
        ("01.02.G22", "000.01.02.G22"),
        ("12.H41", "000.00.12.H41"),
        ("H41", "000.00.00.H41"),
        ("0.0.12.H41", "000.00.12.H41"),
        (" 000.00.00.h41 ", "000.00.00.H41"),
    ],
)
def test_short_forms_are_normalised_and_reported(text: str, canonical: str) -> None:
    organ, changed = normalise_organ_id(text)
    assert str(organ) == canonical
    assert changed is True


def test_canonical_form_is_unchanged() -> None:
    assert normalise_organ_id("000.00.12.H41") == (OrganId(0, 0, 12, "H41"), False)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("001.00.20.TT2", "one letter and two digits"),
        ("28.22.H17x", "one letter and two digits"),
        ("000.00.00.41", "one letter and two digits"),
        ("000..00.H41", "empty segment"),
        ("1.000.00.00.H41", "5 segments"),
        ("0000.00.00.H41", "more than 3 digits"),
        ("000.100.00.H41", "more than 2 digits"),
        ("000.0a.00.H41", "must be digits"),
        ("000.12\n.00.H41", "must be digits"),
        ("000.\u0660\u0660.00.H41", "must be digits"),  # Arabic-Indic digits: str.isdigit() says yes
    ],
)
def test_rejections_say_what_is_wrong(text: str, phrase: str) -> None:
    with pytest.raises(InvalidOrganIdError, match=phrase):
        OrganId.parse(text)


def test_usable_as_a_pydantic_field() -> None:
    class Holder(BaseModel):
        organ: OrganId

    assert Holder(organ="28.22.H17").organ == OrganId(0, 28, 22, "H17")  # type: ignore[arg-type]
    assert Holder(organ=OrganId(0, 0, 1, "G22")).model_dump(mode="json") == {"organ": "000.00.01.G22"}
    with pytest.raises(ValidationError, match="one letter and two digits"):
        Holder(organ="000.00.00.TT2")  # type: ignore[arg-type]


organ_ids = st.builds(
    OrganId,
    v=st.integers(0, 999),
    z=st.integers(0, 99),
    y=st.integers(0, 99),
    top=st.builds(
        lambda letter, number: f"{letter}{number:02d}",
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        st.integers(0, 99),
    ),
)


@given(organ_ids)
def test_format_then_parse_is_identity(organ: OrganId) -> None:
    assert OrganId.parse(str(organ)) == organ
    assert normalise_organ_id(str(organ))[1] is False


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_our_error(text: str) -> None:
    try:
        organ = OrganId.parse(text)
    except InvalidOrganIdError:
        return
    assert OrganId.parse(str(organ)) == organ


@given(st.text(alphabet="0123456789.HGK", max_size=20))
def test_near_miss_text_parses_or_raises_our_error(text: str) -> None:
    try:
        organ = OrganId.parse(text)
    except InvalidOrganIdError:
        return
    assert str(organ).count(".") == 3


@given(organ_ids)
def test_parent_chain_climbs_to_the_root(organ: OrganId) -> None:
    chain = organ.ancestors()
    levels = [organ.level, *(a.level for a in chain)]
    assert levels == sorted(levels, reverse=True)
    assert len(set(levels)) == len(levels)
    assert (chain[-1] if chain else organ) == organ.root
    assert organ.is_within(organ.root)
