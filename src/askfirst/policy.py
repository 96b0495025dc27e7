"""The policy: purposes, categories and regimes, loaded from TOML and checked on load.

An operator edits a TOML file (the shipped one is ``default_policy.toml``). Loading it
either gives a :class:`Policy` that keeps DESIGN.md's rules, or raises
:class:`~askfirst.errors.PolicyError` naming the key and the reason. Nothing a policy says
can put anyone in by default where the law requires consent (see ``jurisdictions``), nor
let a purpose use messages, security data or payment data.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from askfirst import jurisdictions
from askfirst.errors import PolicyError, UnknownPurpose
from askfirst.jurisdictions import Regime

CATEGORIES = ("profile", "post", "comment", "article", "video", "ai-prompt")
NEVER_USED = {
    "message": "private messages",
    "security": "security data such as 2FA phone numbers",
    "payment": "payment data",
}
SLUG = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NoticeVersion(_Strict):
    """An earlier published version of a purpose's terms."""

    version: int = Field(ge=1)
    categories: tuple[str, ...]
    recipients: tuple[str, ...] = ("the platform",)


class Purpose(_Strict):
    """One use of data that needs a choice."""

    name: str = ""
    title: str = Field(min_length=1)
    description: str = ""
    version: int = Field(ge=1, description="the current notice version; grants are bound to it")
    categories: tuple[str, ...] = Field(min_length=1)
    recipients: tuple[str, ...] = ("the platform",)
    default: Literal["on", "off"] = "off"
    grace_days: int = Field(default=30, ge=0)
    honours_gpc: bool = True
    reaches_back: bool = True
    shares_outside: bool = Field(
        default=False,
        description="its snapshots may be given to registered outside recipients "
        "(research partners), who are then told of every withdrawal that reaches them",
    )
    public_signal: bool = Field(
        default=False,
        strict=True,
        description="the public pages of members whose data this purpose may not use carry "
        "machine-readable do-not-train signals for crawlers (X-Robots-Tag: noai, "
        "tdm-reservation: 1, Content-Usage: train-ai=n)",
    )
    legal_basis: str = "consent"
    dpv_purpose: str = Field(
        default="dpv:ResearchAndDevelopment",
        description="the W3C Data Privacy Vocabulary purpose term used in receipts",
    )
    history: tuple[NoticeVersion, ...] = ()

    @cached_property
    def grant_versions(self) -> frozenset[int]:
        """Notice versions whose grants still count: the current one, and any earlier one
        that already covered every category and recipient the purpose has now."""
        ok = {self.version}
        now_cats, now_recs = set(self.categories), set(self.recipients)
        for old in self.history:
            if now_cats <= set(old.categories) and now_recs <= set(old.recipients):
                ok.add(old.version)
        return frozenset(ok)


class JurisdictionRules(_Strict):
    opt_out: tuple[str, ...] = ()
    opt_in: tuple[str, ...] = ()

    @field_validator("opt_out", "opt_in", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            return tuple(str(c).strip().upper() for c in v)
        return v


class CategoryRules(_Strict):
    extra: tuple[str, ...] = ()


class NamesRules(_Strict):
    """How long a subject's replaced handle or name stays protected (``[names]``)."""

    former_protected_days: int = Field(
        default=365,
        ge=0,
        le=36_500,
        strict=True,
        description="days a handle or name a subject gave up still resolves to them and is "
        "redacted like their current ones (0: not at all)",
    )


class Controller(_Strict):
    """Who decides how the data is used (named on every consent receipt)."""

    name: str = Field(default="The platform", min_length=1)
    contact: str = ""


class _PolicyFile(_Strict):
    purposes: dict[str, Purpose] = Field(min_length=1)
    jurisdictions: JurisdictionRules = JurisdictionRules()
    categories: CategoryRules = CategoryRules()
    controller: Controller = Controller()
    names: NamesRules = NamesRules()


@dataclass(frozen=True)
class Policy:
    """A checked policy. Build it with :func:`load_policy` or :func:`parse_policy`."""

    purposes: dict[str, Purpose]
    jurisdiction_rules: JurisdictionRules
    categories: tuple[str, ...]
    controller: Controller
    source: str
    hash: str
    names: NamesRules = field(default_factory=NamesRules)
    # Per purpose, the first instant (microseconds) its published default could apply:
    # set from the published notices when a ledger is opened (``notices.bind``).
    not_before: dict[str, int] = field(default_factory=dict)
    # The seq of the last published notice it was bound to (0: none).
    notices_seq: int = 0

    def purpose(self, name: str) -> Purpose:
        try:
            return self.purposes[name]
        except KeyError:
            raise UnknownPurpose(name, sorted(self.purposes)) from None

    @cached_property
    def public_signal_purposes(self) -> tuple[Purpose, ...]:
        """The purposes with ``public_signal``: a member's public pages say "do not train"
        while any of them may not use the member's data. Often one; possibly none."""
        return tuple(p for p in self.purposes.values() if p.public_signal)

    @cached_property
    def _listed(self) -> dict[str, Regime]:
        listed: dict[str, Regime] = {}
        for code in self.jurisdiction_rules.opt_out:
            listed.update(dict.fromkeys(jurisdictions.expand(code), Regime.OPT_OUT))
        for code in self.jurisdiction_rules.opt_in:
            listed.update(dict.fromkeys(jurisdictions.expand(code), Regime.OPT_IN))
        return listed

    def regime(self, code: str | None) -> Regime:
        """The regime at a jurisdiction; unknown or missing places are opt-in."""
        if not code:
            return Regime.OPT_IN
        code = code.upper()
        if jurisdictions.legal_floor(code):
            return Regime.OPT_IN
        if code in self._listed:
            return self._listed[code]
        return self._listed.get(jurisdictions.country_of(code), Regime.OPT_IN)


def _canonical_hash(model: _PolicyFile) -> str:
    data = model.model_dump(mode="json")
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _pydantic_message(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{source}: {where}: {first['msg']}"


def _check(source: str, pf: _PolicyFile) -> tuple[str, ...]:
    """Apply the rules pydantic cannot express; return the known categories."""
    for extra in pf.categories.extra:
        if not SLUG.match(extra):
            raise PolicyError(f"{source}: categories.extra: {extra!r} is not a valid name")
    known = (*CATEGORIES, *pf.categories.extra, *NEVER_USED)
    for name, p in pf.purposes.items():
        key = f"purposes.{name}"
        if not SLUG.match(name):
            raise PolicyError(
                f"{source}: {key}: a purpose name is lower-case letters, digits and '-'"
            )
        versions = [h.version for h in p.history]
        if len(set(versions)) != len(versions) or any(v >= p.version for v in versions):
            raise PolicyError(
                f"{source}: {key}.history: versions must be distinct and below the current "
                f"version {p.version}"
            )
        lists = [("categories", p.categories)]
        lists += [(f"history[{i}].categories", h.categories) for i, h in enumerate(p.history)]
        for key_name, cats in lists:
            for cat in cats:
                if cat in NEVER_USED:
                    raise PolicyError(
                        f"{source}: {key}.{key_name}: {cat!r} ({NEVER_USED[cat]}) may never be "
                        "used by any purpose; remove it"
                    )
                if cat not in known:
                    raise PolicyError(
                        f"{source}: {key}.{key_name}: unknown category {cat!r}; known: "
                        f"{', '.join(known[: -len(NEVER_USED)])} (add new ones under "
                        "[categories] extra)"
                    )
    rules = pf.jurisdictions
    seen: dict[str, str] = {}
    for list_name, codes in (("opt_out", rules.opt_out), ("opt_in", rules.opt_in)):
        for code in codes:
            if not jurisdictions.is_valid(code):
                raise PolicyError(
                    f"{source}: jurisdictions.{list_name}: unknown jurisdiction {code!r}; use ISO "
                    "3166-1 alpha-2 (e.g. 'US'), ISO 3166-2 (e.g. 'US-CA') or a group "
                    f"({', '.join(jurisdictions.GROUPS)})"
                )
            if code in seen:
                raise PolicyError(
                    f"{source}: jurisdictions: {code!r} is listed under both "
                    f"{seen[code]} and {list_name}"
                )
            seen[code] = list_name
    defaults_on = sorted(n for n, p in pf.purposes.items() if p.default == "on")
    for code in rules.opt_out:
        for place in sorted(jurisdictions.expand(code)):
            why = jurisdictions.legal_floor(place)
            if why:
                which = (
                    f"purpose {', '.join(repr(n) for n in defaults_on)} would apply its "
                    "default 'on' there"
                    if defaults_on
                    else "no default may ever apply there"
                )
                named = f"{code!r}" if place == code else f"{code!r} (which includes {place!r})"
                raise PolicyError(
                    f"{source}: jurisdictions.opt_out: {named} is {why}, where the law "
                    f"requires consent (opt-in); {which}. Remove it from opt_out"
                )
    return tuple(c for c in known if c not in NEVER_USED)


def parse_policy(text: str, source: str = "policy.toml") -> Policy:
    """Check a policy given as TOML text; raise PolicyError naming the key and the reason."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source}: not valid TOML: {e}") from None
    if isinstance(raw.get("purposes"), dict):
        for name, body in raw["purposes"].items():
            if isinstance(body, dict):
                body.setdefault("name", name)
    try:
        pf = _PolicyFile.model_validate(raw)
    except ValidationError as e:
        raise PolicyError(_pydantic_message(source, e)) from None
    for name, p in pf.purposes.items():
        if p.name != name:
            raise PolicyError(f"{source}: purposes.{name}.name: must be {name!r} or left out")
    categories = _check(source, pf)
    return Policy(
        purposes=dict(pf.purposes),
        jurisdiction_rules=pf.jurisdictions,
        categories=categories,
        controller=pf.controller,
        source=source,
        hash=_canonical_hash(pf),
        names=pf.names,
    )


def default_policy_text() -> str:
    return resources.files("askfirst").joinpath("default_policy.toml").read_text("utf-8")


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and check a policy file; ``None`` gives the shipped policy."""
    if path is None:
        return parse_policy(default_policy_text(), "default_policy.toml (shipped)")
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as e:
        raise PolicyError(f"{p}: cannot read the policy: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{p}: the policy is not UTF-8 text") from None
    return parse_policy(text, str(p))
