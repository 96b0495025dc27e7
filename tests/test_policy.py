"""The policy: the shipped one, the errors an operator gets, regimes and notice versions.

Every refused policy must raise PolicyError with a message that names the key at fault
and the reason, so that an operator can fix the file without reading askfirst's code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pycountry
import pytest

from askfirst import Policy, PolicyError, load_policy, parse_policy
from askfirst.errors import UnknownPurpose
from askfirst.jurisdictions import EEA, EU, Regime, legal_floor

PURPOSE = """
[purposes.genai-training]
title = "Use my data to train content-creation AI models"
version = 1
categories = ["profile", "post"]
{purpose_extra}
"""


def policy_text(purpose_extra: str = "", opt_out: str = '["US"]', opt_in: str = "[]") -> str:
    return (
        PURPOSE.format(purpose_extra=purpose_extra)
        + f"\n[jurisdictions]\nopt_out = {opt_out}\nopt_in = {opt_in}\n"
    )


def refused(text: str) -> str:
    """The message of the PolicyError raised when loading ``text``."""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "ops.toml")
    message = str(info.value)
    assert message.startswith("ops.toml: "), message
    assert "\n" not in message, message
    return message


# ---- the shipped policy ----------------------------------------------------------------


def test_shipped_policy_has_both_purposes_off_by_default() -> None:
    policy = load_policy()
    assert set(policy.purposes) == {"genai-training", "third-party-research"}
    assert all(p.default == "off" for p in policy.purposes.values())
    assert policy.purpose("genai-training").title == (
        "Use my data to train content-creation AI models"
    )
    assert policy.purpose("third-party-research").title == (
        "Social, economic and workplace research by vetted partners"
    )


def test_shipped_policy_never_uses_forbidden_categories() -> None:
    policy = load_policy()
    for p in policy.purposes.values():
        assert not {"message", "security", "payment"} & set(p.categories), p.name
    assert not {"message", "security", "payment"} & set(policy.categories)


def test_shipped_policy_is_opt_in_in_the_eea_uk_switzerland_and_unknown_places() -> None:
    policy = load_policy()
    for code in ("DE", "FR", "FR-75C", "IS", "NO", "LI", "GB", "GB-ENG", "CH", None, "", "ZZ"):
        assert policy.regime(code) == Regime.OPT_IN, code


def test_unknown_purpose_is_an_input_error_naming_it() -> None:
    with pytest.raises(UnknownPurpose, match=r"'face-recognition'.*genai-training"):
        load_policy().purpose("face-recognition")


def test_load_policy_from_a_file_reads_and_checks_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(), "utf-8")
    policy = load_policy(path)
    assert list(policy.purposes) == ["genai-training"]
    path.write_text(policy_text(opt_out='["US", "FR"]'), "utf-8")
    with pytest.raises(PolicyError, match=re.escape(str(path))):
        load_policy(path)


def test_missing_policy_file_is_a_policy_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=re.escape(str(path))):
        load_policy(path)


def test_policy_file_that_is_not_utf8_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(policy_text().replace("Use my", "Utilisé\xe9").encode("latin-1"))
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(path)


# ---- errors name the key and the reason -------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "why"),
    [
        ('"FR"', "EEA"),
        ('"fr"', "EEA"),
        ('"EEA"', "EEA"),
        ('"EU"', "EEA"),
        ('"NO"', "EEA"),
        ('"GB"', "United Kingdom"),
        ('"GB-SCT"', "United Kingdom"),
        ('"CH"', "Switzerland"),
        ('"FR-75C"', "EEA"),
    ],
)
def test_opt_out_on_a_legal_floor_is_refused(listed: str, why: str) -> None:
    message = refused(policy_text(opt_out=f'["US", {listed}]'))
    assert "jurisdictions.opt_out" in message
    assert listed.strip('"').upper() in message
    assert why in message
    assert "consent" in message


def test_every_french_subdivision_is_under_the_eea_floor() -> None:
    codes = sorted(s.code for s in pycountry.subdivisions.get(country_code="FR"))
    assert "FR-75C" in codes
    for code in codes:
        assert legal_floor(code) == "in the EEA", code
    # one arbitrary subdivision other than Paris, through the whole loader
    message = refused(policy_text(opt_out=f'["{codes[len(codes) // 2]}"]'))
    assert codes[len(codes) // 2] in message


def test_default_on_in_an_opt_in_country_names_the_purpose_and_the_jurisdiction() -> None:
    """DESIGN rule 1."""
    message = refused(policy_text('default = "on"', opt_out='["US", "DE"]'))
    assert "jurisdictions.opt_out" in message
    assert "'genai-training'" in message
    assert "'DE'" in message
    assert "on" in message


def test_default_on_where_the_policy_allows_opt_out_is_accepted() -> None:
    policy = parse_policy(policy_text('default = "on"', opt_out='["US", "IN"]'))
    assert policy.purpose("genai-training").default == "on"
    assert policy.regime("US") == Regime.OPT_OUT
    assert policy.regime("DE") == Regime.OPT_IN


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ('categories = ["profile", "selfies"]', "categories", "unknown category 'selfies'"),
        ('categories = ["profile", "message"]', "categories", "'message'"),
        ('categories = ["security"]', "categories", "'security'"),
        ('categories = ["post", "payment"]', "categories", "'payment'"),
        ("grace_days = -1", "grace_days", "greater than or equal to 0"),
        ('colour = "red"', "colour", "Extra inputs are not permitted"),
        ('default = "maybe"', "default", "'on' or 'off'"),
    ],
)
def test_bad_purpose_values_name_the_key_and_reason(extra: str, key: str, reason: str) -> None:
    # categories given twice would be bad TOML, so a replacement goes in place of the list
    if extra.startswith("categories"):
        text = policy_text().replace('categories = ["profile", "post"]', extra)
    else:
        text = policy_text(extra)
    message = refused(text)
    assert f"purposes.genai-training.{key}" in message
    assert reason in message


@pytest.mark.parametrize("cat", ["message", "security", "payment"])
def test_forbidden_category_in_an_older_notice_version_is_refused(cat: str) -> None:
    text = policy_text(f'history = [{{version = 1, categories = ["post", "{cat}"]}}]')
    message = refused(text.replace("version = 1\n", "version = 2\n", 1))
    assert "purposes.genai-training.history[0].categories" in message
    assert repr(cat) in message


def test_missing_title_names_the_key() -> None:
    text = policy_text().replace('title = "Use my data to train content-creation AI models"\n', "")
    message = refused(text)
    assert "purposes.genai-training.title" in message
    assert "required" in message


def test_empty_categories_are_refused() -> None:
    text = policy_text().replace('categories = ["profile", "post"]', "categories = []")
    assert "purposes.genai-training.categories" in refused(text)


@pytest.mark.parametrize("old", [1, 2, 3])
def test_history_version_not_below_current_is_refused(old: int) -> None:
    text = policy_text(f'history = [{{version = {old}, categories = ["profile"]}}]')
    if old == 1:
        # against version 1, an older version 1 is the same number
        message = refused(text)
    else:
        message = refused(text.replace("version = 1\n", "version = 2\n", 1))
    assert "purposes.genai-training.history" in message
    assert "below the current version" in message


def test_history_versions_must_be_distinct() -> None:
    text = policy_text(
        'history = [{version = 1, categories = ["profile"]}, {version = 1, categories = ["post"]}]'
    ).replace("version = 1\n", "version = 3\n", 1)
    assert "distinct" in refused(text)


@pytest.mark.parametrize("field", ["opt_out", "opt_in"])
def test_unknown_jurisdiction_code_is_refused(field: str) -> None:
    if field == "opt_out":
        message = refused(policy_text(opt_out='["US", "XX"]'))
    else:
        message = refused(policy_text(opt_in='["XX"]'))
    assert f"jurisdictions.{field}" in message
    assert "unknown jurisdiction 'XX'" in message


def test_unknown_subdivision_code_is_refused() -> None:
    assert "unknown jurisdiction 'US-ZZ'" in refused(policy_text(opt_out='["US-ZZ"]'))


def test_code_listed_both_opt_out_and_opt_in_is_refused() -> None:
    message = refused(policy_text(opt_out='["US", "IN"]', opt_in='["in"]'))
    assert "jurisdictions" in message
    assert "'IN'" in message
    assert "opt_out" in message and "opt_in" in message


def test_bad_toml_is_refused() -> None:
    message = refused("[purposes.genai-training\ntitle = 'x'\n")
    assert "not valid TOML" in message
    assert "line 1" in message


def test_unknown_top_level_key_is_refused() -> None:
    assert "colour" in refused("colour = 1\n" + policy_text())


def test_unknown_jurisdictions_key_is_refused() -> None:
    text = policy_text() + 'opt_maybe = ["US"]\n'
    message = refused(text)
    assert "jurisdictions.opt_maybe" in message


def test_policy_without_purposes_is_refused() -> None:
    assert "purposes" in refused('[jurisdictions]\nopt_out = ["US"]\n')


def test_bad_purpose_name_is_refused() -> None:
    text = policy_text().replace("[purposes.genai-training]", "[purposes.GenAI_Training]")
    assert "purposes.GenAI_Training" in refused(text)


# Territories with their own ISO 3166-1 code where EU law (and so GDPR) applies in full:
# Åland (part of Finland) and the French outermost regions.
@pytest.mark.parametrize("code", ["AX", "GF", "GP", "MQ", "RE", "YT", "MF"])
def test_eu_territories_with_their_own_iso_code_cannot_be_opt_out(code: str) -> None:
    message = refused(policy_text(opt_out=f'["US", "{code}"]'))
    assert code in message


# ---- jurisdictions and regimes ----------------------------------------------------------


def test_eea_is_the_eu_27_plus_iceland_liechtenstein_norway() -> None:
    assert len(EU) == 27
    assert {"IS", "LI", "NO"} | EU == EEA
    assert not {"GB", "CH"} & EEA
    for code in EEA:
        assert pycountry.countries.get(alpha_2=code) is not None, code


def test_subdivision_falls_under_its_country() -> None:
    policy = parse_policy(policy_text(opt_out='["US"]'))
    assert policy.regime("US") == Regime.OPT_OUT
    assert policy.regime("US-CA") == Regime.OPT_OUT
    assert policy.regime("us-ca") == Regime.OPT_OUT
    assert policy.regime("CA") == Regime.OPT_IN  # Canada, not California


def test_listing_a_subdivision_opt_in_carves_it_out_of_its_country() -> None:
    policy = parse_policy(policy_text(opt_out='["US"]', opt_in='["US-CA"]'))
    assert policy.regime("US-CA") == Regime.OPT_IN
    assert policy.regime("US-NY") == Regime.OPT_OUT
    assert policy.regime("US") == Regime.OPT_OUT


def test_listing_only_a_subdivision_opt_out_leaves_the_rest_of_the_country_opt_in() -> None:
    policy = parse_policy(policy_text(opt_out='["US-TX"]'))
    assert policy.regime("US-TX") == Regime.OPT_OUT
    assert policy.regime("US") == Regime.OPT_IN
    assert policy.regime("US-NY") == Regime.OPT_IN


@pytest.mark.parametrize("code", [None, "", "ZZ", "XX-99", "IN"])
def test_unknown_or_unlisted_places_are_opt_in(code: str | None) -> None:
    policy = parse_policy(policy_text(opt_out='["US"]'))
    assert policy.regime(code) == Regime.OPT_IN


@pytest.mark.parametrize("code", [*sorted(EEA), "GB", "CH", "DE-BY", "GB-WLS"])
def test_eea_uk_and_switzerland_are_opt_in_even_when_not_listed(code: str) -> None:
    policy = parse_policy(policy_text(opt_out='["US", "IN", "BR"]'))
    assert policy.regime(code) == Regime.OPT_IN


def test_regime_values_are_the_words_of_the_design() -> None:
    assert {str(r) for r in Regime} == {"opt-in", "opt-out"}


# ---- notice versions and grants (DESIGN rule 7) -----------------------------------------


def purpose_with_history(version: int, now: str, history: str) -> Policy:
    text = f"""
[purposes.p]
title = "P"
version = {version}
{now}
history = [{history}]
"""
    return parse_policy(text)


def test_new_category_drops_grants_under_older_versions() -> None:
    policy = purpose_with_history(
        2,
        'categories = ["profile", "post", "video"]',
        '{version = 1, categories = ["profile", "post"]}',
    )
    assert policy.purpose("p").grant_versions == frozenset({2})


def test_new_recipient_drops_grants_under_older_versions() -> None:
    policy = purpose_with_history(
        2,
        'categories = ["post"]\nrecipients = ["the platform", "its affiliates"]',
        '{version = 1, categories = ["post"], recipients = ["the platform"]}',
    )
    assert policy.purpose("p").grant_versions == frozenset({2})


def test_narrowing_keeps_grants_under_older_versions() -> None:
    policy = purpose_with_history(
        3,
        'categories = ["post"]\nrecipients = ["the platform"]',
        '{version = 1, categories = ["post", "video"], recipients = ["the platform", "x"]}, '
        '{version = 2, categories = ["post", "comment"]}',
    )
    assert policy.purpose("p").grant_versions == frozenset({1, 2, 3})


def test_widening_after_narrowing_only_keeps_the_versions_that_cover_it() -> None:
    # v1 covered post+video, v2 narrowed to post, v3 is post+video again: v2 no longer counts
    policy = purpose_with_history(
        3,
        'categories = ["post", "video"]',
        '{version = 1, categories = ["post", "video"]}, {version = 2, categories = ["post"]}',
    )
    assert policy.purpose("p").grant_versions == frozenset({1, 3})


def test_no_history_means_only_the_current_version() -> None:
    assert load_policy().purpose("genai-training").grant_versions == frozenset({1})


# ---- the policy hash (DESIGN rule 8) ----------------------------------------------------


def test_policy_hash_is_stable_for_the_same_content(tmp_path: Path) -> None:
    text = policy_text()
    a = parse_policy(text, "a.toml")
    b = parse_policy(text, "b.toml")
    assert re.fullmatch(r"[0-9a-f]{64}", a.hash)
    assert a.hash == b.hash
    path = tmp_path / "same.toml"
    path.write_text(text, "utf-8")
    assert load_policy(path).hash == a.hash
    assert load_policy().hash == load_policy().hash


def test_policy_hash_ignores_comments_and_key_order() -> None:
    text = policy_text()
    reordered = """# the same policy, written differently
[jurisdictions]
opt_in = []
opt_out = ["US"]   # where a default could apply

[purposes.genai-training]
categories = ["profile", "post"]
version = 1
title = "Use my data to train content-creation AI models"
"""
    assert parse_policy(reordered).hash == parse_policy(text).hash


@pytest.mark.parametrize(
    "change",
    [
        ("version = 1\n", "version = 2\n"),
        ('["profile", "post"]', '["profile", "post", "video"]'),
        ("content-creation", "content creation"),
        ('opt_out = ["US"]', 'opt_out = ["US", "IN"]'),
        ("opt_in = []", 'opt_in = ["US-CA"]'),
    ],
)
def test_policy_hash_changes_when_a_value_changes(change: tuple[str, str]) -> None:
    text = policy_text()
    old, new = change
    assert old in text
    assert parse_policy(text.replace(old, new, 1)).hash != parse_policy(text).hash


def test_policy_hash_changes_with_grace_days() -> None:
    assert (
        parse_policy(policy_text("grace_days = 30")).hash
        != parse_policy(policy_text("grace_days = 31")).hash
    )


# ---- public_signal -----------------------------------------------------------------------


def test_shipped_policy_signals_do_not_train_for_genai_training_only() -> None:
    policy = load_policy()
    assert [p.name for p in policy.public_signal_purposes] == ["genai-training"]


def test_public_signal_is_off_unless_set_and_any_purpose_may_carry_it() -> None:
    assert parse_policy(policy_text()).public_signal_purposes == ()
    grok = policy_text("public_signal = true").replace("genai-training", "grok-training")
    assert [p.name for p in parse_policy(grok).public_signal_purposes] == ["grok-training"]


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_public_signal_must_be_true_or_false(value: str) -> None:
    message = refused(policy_text(f"public_signal = {value}"))
    assert "purposes.genai-training.public_signal" in message
    assert "boolean" in message
