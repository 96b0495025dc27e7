"""Where a subject lives, and which regime the law there sets for using their data.

Jurisdictions are ISO 3166-1 alpha-2 countries (``DE``), ISO 3166-2 subdivisions
(``US-CA``) and named groups (``EEA``, ``EU``). A subdivision falls under its country
unless a policy lists the subdivision itself. The legal floors here hold whatever a
policy says: consent is required (opt-in) in the EEA, the United Kingdom and Switzerland,
and anywhere askfirst does not know.
"""

from __future__ import annotations

from enum import StrEnum

EU = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "HU",
    ]
)
EEA = EU | {"IS", "LI", "NO"}
GROUPS: dict[str, frozenset[str]] = {"EU": EU, "EEA": EEA}

# Places where the law requires consent, whatever a policy says, and why.
LEGAL_FLOORS: dict[str, str] = {code: "in the EEA" for code in EEA}
LEGAL_FLOORS.update({"GB": "the United Kingdom", "CH": "Switzerland"})
# EU territory with an ISO 3166-1 code of its own: GDPR applies there as in the rest.
LEGAL_FLOORS.update({"AX": "Åland, part of Finland and the EEA"})
LEGAL_FLOORS.update(
    dict.fromkeys(("GF", "GP", "MQ", "RE", "YT", "MF"), "an outermost region of the EU (France)")
)


class Regime(StrEnum):
    """What the law where a subject lives allows."""

    OPT_IN = "opt-in"
    OPT_OUT = "opt-out"


def is_valid(code: str) -> bool:
    """True for a known country, subdivision or group code (upper case)."""
    if code in GROUPS:
        return True
    import pycountry  # here, not at import: reading its tables costs every command ~20 ms

    if "-" in code:
        return pycountry.subdivisions.get(code=code) is not None  # type: ignore[no-untyped-call]
    return len(code) == 2 and pycountry.countries.get(alpha_2=code) is not None


def normalize(code: str) -> str:
    """Upper-case a code and check it; raise ValueError naming it when unknown."""
    norm = code.strip().upper()
    if not norm or not is_valid(norm) or norm in GROUPS:
        raise ValueError(
            f"{code!r} is not an ISO 3166-1 alpha-2 country or ISO 3166-2 subdivision code"
        )
    return norm


def expand(code: str) -> frozenset[str]:
    """The country or subdivision codes a listed code stands for (a group gives its members)."""
    return GROUPS.get(code, frozenset({code}))


def country_of(code: str) -> str:
    """``US-CA`` -> ``US``; a country is its own country."""
    return code.split("-", 1)[0]


def legal_floor(code: str) -> str | None:
    """Why the law requires consent at ``code`` (a country or subdivision), or None."""
    return LEGAL_FLOORS.get(country_of(code))
