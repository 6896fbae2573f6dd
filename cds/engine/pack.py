"""Load, validate and compile a rule pack; evaluate clinical facts against it.

A pack is compiled once per (version, profile): table references are resolved,
``for_each`` rules are expanded per table row, conditions become durable_rules JSON, and
templates are checked against the fact fields. Evaluation asserts the request's facts
into one durable_rules session and turns each match into a ``Finding``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from cds.clinical.drugspec import DrugSpec
from cds.clinical.facts import (
    ALWAYS_DERIVED,
    DERIVED_ORDER_FIELDS,
    ClinicalFacts,
    DataIssue,
    InteractionFacts,
    OrderFacts,
    PatientFacts,
)
from cds.clinical.params import ClinicalParams
from cds.engine import conditions as cond
from cds.engine import derived
from cds.engine.derived import Derived, compile_expr
from cds.engine.drug import build_drug
from cds.engine.findings import Finding, SuggestionSpec
from cds.engine.runtime import RuleRuntime, default_runtime
from cds.engine.schema import (
    HOOKS,
    SUGGESTION_PARAMS,
    DispensingDef,
    PackDef,
    PrefetchDef,
    RuleDef,
)
from cds.errors import PackError
from cds.markdown import md_text, plain_text

SEVERITIES = ("info", "warning", "critical")


def _engine_field_names(*classes: type) -> set[str]:
    out: set[str] = set()
    for c in classes:
        out |= {f.name for f in dataclasses.fields(c) if f.metadata.get("engine", True)}
    return out


_BASE = {"kind", "hook"}
FACT_FIELDS: dict[str, frozenset[str]] = {
    "order": frozenset(
        _BASE | _engine_field_names(PatientFacts, OrderFacts) | DERIVED_ORDER_FIELDS
    ),
    "interaction": frozenset(
        _BASE
        | _engine_field_names(PatientFacts, InteractionFacts)
        | {"route", "is_draft", "change", "family", "new_start", "indication"}
        | {"renal_label", "renal_unit", "renal_date"}
        | ALWAYS_DERIVED
    ),
    "data_issue": frozenset(_BASE | _engine_field_names(DataIssue)),
}


def _always_present(*classes: type) -> set[str]:
    """Fields a fact always carries (a non-None default, or required)."""
    out: set[str] = set()
    for c in classes:
        for f in dataclasses.fields(c):
            if not f.metadata.get("engine", True):
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required or (f.default is not dataclasses.MISSING and f.default is not None):
                out.add(f.name)
    return out


ALWAYS_PRESENT: dict[str, frozenset[str]] = {
    "order": frozenset(
        _BASE | _always_present(PatientFacts, OrderFacts) | {"continuing"} | ALWAYS_DERIVED
    ),
    "interaction": frozenset(
        _BASE
        | _always_present(PatientFacts, InteractionFacts)
        | {"route", "is_draft"}
        | ALWAYS_DERIVED
    ),
    "data_issue": frozenset(_BASE | _always_present(DataIssue)),
}


def pack_fields(pack: PackDef) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """(fact fields, always-present fields) per fact kind for one pack: the fields every
    drug has, plus the pack's own flags (its conditions, co-medications, observations)."""
    onsets = {c.onset_field for c in pack.conditions.values() if c.onset_field}
    own = set(pack.conditions) | set(pack.comedications) | set(pack.observations) | onsets
    schedules = {f"above_{n}{s}" for n in pack.drug.schedules for s in ("", "_later")}
    booleans = (
        set(pack.conditions)
        | set(pack.comedications)  # flags, and counts (always a number)
        | {k for k, o in pack.observations.items() if o.value == "positive"}
    )
    fields = {k: (v | own if k in ("order", "interaction") else v) for k, v in FACT_FIELDS.items()}
    fields["order"] = fields["order"] | schedules
    present = {
        k: (v | booleans if k in ("order", "interaction") else v) for k, v in ALWAYS_PRESENT.items()
    }
    return fields, present


# Template format specs that write a count with its noun, singular or plural.
COUNT_WORDS = {
    "days": ("day", "days"),
    "hours": ("hour", "hours"),
    "weeks": ("week", "weeks"),
    "doses": ("dose", "doses"),
}


class _SafeFormatter(string.Formatter):
    """Formats templates; a missing fact reads "unknown" and floats read naturally."""

    def get_value(self, key: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        return kwargs.get(key, "unknown") if isinstance(key, str) else "unknown"

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec in COUNT_WORDS:  # {days_on_current:days} -> "1 day", "3 days"
            if not isinstance(value, int | float) or isinstance(value, bool):
                return str(value)
            one, many = COUNT_WORDS[format_spec]
            return f"{fmt_number(float(value))} {one if abs(value - 1) < 1e-9 else many}"
        if not format_spec:
            return fmt_number(value) if isinstance(value, float) else str(value)
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


def fmt_number(x: float) -> str:
    """60.0 -> "60", 47.23 -> "47.2", 0.25 -> "0.25" (doses and renal values)."""
    if not math.isfinite(x):  # never int(inf): an overflowed total reads as such
        return "unknown" if math.isnan(x) else ("∞" if x > 0 else "-∞")
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}".rstrip("0").rstrip(".")


FORMATTER = _SafeFormatter()


def render(template: str, values: Mapping[str, Any]) -> str:
    return FORMATTER.vformat(template, (), values)


@dataclass(frozen=True)
class CompiledRule:
    id: str
    title: str
    category: str
    severity: str
    fact_kind: str
    hooks: tuple[str, ...]
    summary: str
    detail: str
    vars: dict[str, Any]
    evidence: tuple[str, ...]
    suggestion: SuggestionSpec | None
    override_reasons: tuple[str, ...]
    group: str | None
    position: int
    conditions: tuple[dict[str, Any], ...]  # one durable_rules rule per DNF term
    unless_offered: str | None
    unless_pack: str | None
    tree: Any = field(compare=False, repr=False)
    join_worst: bool = False
    never_alone: bool = False


@dataclass
class CompiledPack:
    """One pack version compiled for one jurisdiction profile."""

    id: str
    version: str
    title: str
    profile: str
    rules: dict[str, CompiledRule]
    evidence: dict[str, dict[str, Any]]
    override_reasons: dict[str, dict[str, str]]
    default_override_reasons: tuple[str, ...]
    clinical: ClinicalParams
    drug: DrugSpec
    profile_values: dict[str, Any]
    tables: dict[str, Any]
    dispensing: DispensingDef | None
    digest: str
    source_dir: Path
    prefetch: dict[str, PrefetchDef] = field(default_factory=dict)
    service_aliases: dict[str, str] = field(default_factory=dict)
    derived: tuple[Derived, ...] = ()
    runtime: RuleRuntime = field(repr=False, default_factory=default_runtime)

    @property
    def ruleset_name(self) -> str:
        return f"{self.id}@{self.version}#{self.profile}#{self.digest[:12]}"

    @property
    def label(self) -> str:
        return f"{self.title} rule pack {self.version} ({self.profile})"

    def engine_rules(self) -> dict[str, dict[str, Any]]:
        """durable_rules rules: ``<rule id>~<k>`` for the k-th alternative of a rule."""
        return {f"{r.id}~{k}": c for r in self.rules.values() for k, c in enumerate(r.conditions)}

    def install(self) -> None:
        if not self.runtime.has(self.ruleset_name):
            self.runtime.install(self.ruleset_name, self.engine_rules())

    def evaluate(self, facts: ClinicalFacts, *, texts: bool = True) -> list[Finding]:
        """Run the facts through durable_rules; one Finding per (rule, fact) that fired.

        ``texts=False`` leaves summary and detail empty: a suggestion's re-check judges
        rules, categories and severities, and rendering every template of every finding
        was a tenth of its cost."""
        return self.findings_for(facts.engine_facts(), texts=texts)

    def findings_for(
        self, engine_facts: list[dict[str, Any]], *, texts: bool = True
    ) -> list[Finding]:
        if not engine_facts:
            return []
        derived.apply(self.derived, engine_facts)
        seen: set[tuple[str, str]] = set()
        findings = []
        # Several rules fire on one fact: its key and escaped texts are made once (the
        # matches hold every fact object until the loop ends, so an id stays one fact).
        keys: dict[int, str] = {}
        made: dict[int, tuple[dict[str, Any], dict[str, Any]]] | None = {} if texts else None
        for m in self.runtime.evaluate(self.ruleset_name, engine_facts):
            rule_id = m.rule_id.rsplit("~", 1)[0]
            fact_key = keys.get(id(m.fact))
            if fact_key is None:
                fact_key = keys[id(m.fact)] = _fact_key(m.fact)
            key = (rule_id, fact_key)
            if key in seen:
                continue
            seen.add(key)
            findings.append(self._finding(self.rules[rule_id], m.fact, made, texts_wanted=texts))
        findings.sort(key=lambda f: (f.order_id, f.category, -f.rank, f.order))
        return findings

    def _finding(
        self,
        rule: CompiledRule,
        fact: dict[str, Any],
        texts: dict[int, tuple[dict[str, Any], dict[str, Any]]] | None = None,
        *,
        texts_wanted: bool = True,
    ) -> Finding:
        # Fact strings come from the request (ids, medication text, units): plain text in
        # the summary, escaped Markdown in the detail (never structure). Pack vars are ours.
        done = texts.get(id(fact)) if texts is not None else None
        if not texts_wanted:
            done = ({}, {})
        elif done is None:
            text = (str, list, tuple, dict)
            done = (
                {k: plain_text(v) if isinstance(v, text) else v for k, v in fact.items()},
                {k: md_text(v) if isinstance(v, text) else v for k, v in fact.items()},
            )
            if texts is not None:
                texts[id(fact)] = done
        plain, markdown = done
        return Finding(
            rule_id=rule.id,
            category=rule.category,
            severity=rule.severity,
            order_id=str(fact.get("order_id", "")),
            group=str(fact.get(rule.group, "")) if rule.group else "",
            summary=render(rule.summary, {**plain, **rule.vars}) if texts_wanted else "",
            detail=render(rule.detail, {**markdown, **rule.vars}) if texts_wanted else "",
            evidence=rule.evidence,
            suggestion=rule.suggestion,
            override_reasons=rule.override_reasons,
            fact=fact,
            pack_id=self.id,
            pack_version=self.version,
            profile=self.profile,
            order=rule.position,
            unless_offered=rule.unless_offered,
            unless_pack=rule.unless_pack,
            join_worst=rule.join_worst,
            never_alone=rule.never_alone,
        )

    def rules_resting_on_policy_only(self) -> list[str]:
        return [r.id for r in self.rules.values() if set(r.evidence) == {"policy"}]


def _fact_key(fact: dict[str, Any]) -> str:
    """A fact's identity for "one finding per (rule, fact)": its sorted JSON (orjson, the
    standard library for what orjson refuses: a very large integer, a non-text key)."""
    try:
        return orjson.dumps(fact, option=orjson.OPT_SORT_KEYS, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(fact, sort_keys=True, default=str)


# ---- loading ---------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise PackError("file not found", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise PackError(f"invalid YAML: {exc}", file=str(path)) from None


def _pydantic_message(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return loc, err["msg"]


def read_pack(folder: Path) -> tuple[PackDef, dict[str, str]]:
    """Parse and schema-check ``pack.yaml`` and its includes; rule id -> file it came from."""
    main = folder / "pack.yaml"
    raw = _read_yaml(main)
    if not isinstance(raw, dict):
        raise PackError("a pack file must be a mapping", file=str(main))
    raw_rules = list(raw.get("rules") or [])
    origin: list[str] = [str(main)] * len(raw_rules)
    for inc in raw.get("include") or []:
        path = folder / inc
        data = _read_yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise PackError("an included file must hold a 'rules:' list", file=str(path))
        raw_rules.extend(data["rules"])
        origin.extend([str(path)] * len(data["rules"]))
    for i, r in enumerate(raw_rules):
        try:
            RuleDef.model_validate(r)
        except ValidationError as exc:
            loc, msg = _pydantic_message(exc)
            rid = r.get("id") if isinstance(r, dict) else None
            raise PackError(msg, file=origin[i], rule=rid or f"#{i + 1}", field=loc) from None
    try:
        pack = PackDef.model_validate({**raw, "rules": raw_rules})
    except ValidationError as exc:
        loc, msg = _pydantic_message(exc)
        raise PackError(msg, file=str(main), field=loc) from None
    files = {r.id: origin[i] for i, r in enumerate(pack.rules)}
    return pack, files


def _check_template(text: str, allowed: set[str], where: tuple[str, str, str]) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PackError(
            f"bad template: {exc}", file=where[0], rule=where[1], field=where[2]
        ) from None
    for _, name, _, _ in parsed:
        if name and name not in allowed:
            raise PackError(
                f"template names {name!r}, which is neither a fact field nor a var",
                file=where[0],
                rule=where[1],
                field=where[2],
            )


def _compile_derived(
    pack: PackDef, profile: str, fields: dict[str, frozenset[str]], main: str
) -> tuple[Derived, ...]:
    """The pack's derived fields, compiled; each name joins its kind's fact fields (so rules
    may read it) in declaration order (a later one may read an earlier one)."""
    resolver = cond.Resolver({"profile": pack.profiles[profile], "tables": pack.tables}, "")
    out = []
    for i, d in enumerate(pack.derived):
        where = f"derived[{i}] ({d.name})"
        if d.name in fields[d.kind]:
            raise PackError(f"{d.name!r} is already a fact field", file=main, field=where)
        try:
            expr, used = compile_expr(d.value, resolver, fields[d.kind], where)
        except PackError as exc:
            raise PackError(exc.message, file=main, field=exc.field or where) from None
        out.append(Derived(d.name, d.kind, expr, used))
        fields[d.kind] = fields[d.kind] | {d.name}
    return tuple(out)


def compile_pack(
    folder: Path, profile: str | None = None, runtime: RuleRuntime | None = None
) -> CompiledPack:
    """Validate and compile the pack in ``folder`` for ``profile`` (default: the pack's)."""
    pack, files = read_pack(folder)
    profile = profile or pack.default_profile
    main = str(folder / "pack.yaml")
    if profile not in pack.profiles:
        raise PackError(f"no profile {profile!r} (has {sorted(pack.profiles)})", file=main)
    evidence = {e.id: e.model_dump(exclude_none=True) for e in pack.evidence}
    try:
        # clinical parameters may name a table number the rules also use ("@tables.x"),
        # so the two cannot drift apart
        scope = cond.Resolver(
            {"profile": pack.profiles[profile], "tables": pack.tables}, "clinical"
        )
        clinical = ClinicalParams(**{k: scope.value(v) for k, v in pack.clinical.items()})
    except ValidationError as exc:
        loc, msg = _pydantic_message(exc)
        raise PackError(msg, file=main, field=f"clinical.{loc}") from None
    dispensing = None
    if "dispensing" in pack.tables:
        raw = scope.value(pack.tables["dispensing"])
        try:
            dispensing = DispensingDef.model_validate(
                {k: scope.value(v) for k, v in dict(raw).items()}
            )
        except (ValidationError, TypeError, ValueError) as exc:
            loc, msg = (
                _pydantic_message(exc) if isinstance(exc, ValidationError) else ("", str(exc))
            )
            raise PackError(msg, file=main, field=f"tables.dispensing.{loc}".rstrip(".")) from None
    for rid in pack.default_override_reasons:
        if rid not in pack.override_reasons:
            raise PackError(
                f"unknown override reason {rid!r}", file=main, field="default_override_reasons"
            )

    drug, terminology_digest = build_drug(pack, folder)
    fields, present = pack_fields(pack)
    derived = _compile_derived(pack, profile, fields, main)
    rules: dict[str, CompiledRule] = {}
    position = 0
    seen_ids: set[str] = set()
    for rdef in pack.rules:
        if rdef.id in seen_ids:
            raise PackError("duplicate rule id", file=files[rdef.id], rule=rdef.id)
        seen_ids.add(rdef.id)
        if rdef.profiles is not None:
            unknown = set(rdef.profiles) - set(pack.profiles)
            if unknown:
                raise PackError(
                    f"unknown profiles {sorted(unknown)}",
                    file=files[rdef.id],
                    rule=rdef.id,
                    field="profiles",
                )
            if profile not in rdef.profiles:
                continue
        rows: list[tuple[str, Mapping[str, Any] | None]] = [(rdef.id, None)]
        if rdef.for_each:
            table = pack.tables.get(rdef.for_each.table)
            if not isinstance(table, list):
                raise PackError(
                    f"for_each table {rdef.for_each.table!r} is not a list of rows",
                    file=files[rdef.id],
                    rule=rdef.id,
                    field="for_each",
                )
            rows = [
                (f"{rdef.id}.{row['id']}", row)
                for row in table
                if rdef.for_each.where is None or row.get(rdef.for_each.where) is not None
            ]
        for rule_id, row in rows:
            position += 1
            rules[rule_id] = _compile_rule(
                pack,
                rdef,
                rule_id,
                row,
                profile,
                files[rdef.id],
                evidence,
                position,
                kinds=fields,
                present=present,
            )
    if not rules:
        raise PackError(f"no rules for profile {profile!r}", file=main)
    dosing = sorted(
        r.id for r in rules.values() if r.suggestion and r.suggestion.kind != "remove_draft"
    )
    if dosing and dispensing is None:
        raise PackError(
            f"rules suggest doses ({dosing[0]}, ...) but the pack has no tables.dispensing "
            "(rounding, unit_fractions, liquid_step_ml)",
            file=main,
        )
    digest = hashlib.sha256(
        json.dumps(
            [
                pack.version,
                profile,
                {k: r.conditions for k, r in rules.items()},
                terminology_digest,
                pack.model_dump(exclude={"rules"}),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    compiled = CompiledPack(
        id=pack.id,
        version=pack.version,
        title=pack.title,
        profile=profile,
        rules=rules,
        evidence=evidence,
        override_reasons={k: v.model_dump() for k, v in pack.override_reasons.items()},
        default_override_reasons=tuple(pack.default_override_reasons),
        clinical=clinical,
        drug=drug,
        profile_values=dict(pack.profiles[profile]),
        tables=dict(pack.tables),
        dispensing=dispensing,
        digest=digest,
        source_dir=folder,
        prefetch=dict(pack.prefetch),
        service_aliases=dict(pack.service_aliases),
        derived=derived,
        runtime=runtime or default_runtime(),
    )
    compiled.install()
    return compiled


def _compile_rule(
    pack: PackDef,
    rdef: RuleDef,
    rule_id: str,
    row: Mapping[str, Any] | None,
    profile: str,
    file: str,
    evidence: Mapping[str, Any],
    position: int,
    *,
    kinds: Mapping[str, frozenset[str]],
    present: Mapping[str, frozenset[str]],
) -> CompiledRule:
    scopes = {"profile": pack.profiles[profile], "tables": pack.tables, "row": row or {}}
    always = present[rdef.fact]

    def resolver(fieldname: str) -> cond.Resolver:
        return cond.Resolver(scopes, fieldname, always)

    try:
        fields = kinds[rdef.fact]
        parts: list[cond.Node] = [cond.Cmp("kind", "eq", rdef.fact)]
        hooks = tuple(rdef.hooks)
        left_out = sorted(set(HOOKS) - set(hooks))
        if len(left_out) == 1:
            parts.append(cond.Cmp("hook", "ne", left_out[0]))
        elif left_out:
            parts.append(cond.Any_(tuple(cond.Cmp("hook", "eq", h) for h in hooks)))
        parts.append(cond.parse(rdef.when, resolver("when"), fields))
        for i, u in enumerate(rdef.unless):
            parts.append(cond.negate(cond.parse(u, resolver(f"unless[{i}]"), fields), always))
        tree = cond.all_of(parts)
        terms = cond.dnf(tree)
        if not terms:
            raise PackError("the condition can never hold", field="when")
        severity = resolver("severity").value(rdef.severity)
        if severity not in SEVERITIES:
            raise PackError(
                f"severity must be one of {SEVERITIES}, got {severity!r}", field="severity"
            )
        variables = {k: resolver(f"vars.{k}").value(v) for k, v in rdef.vars.items()}
        suggestion = None
        if rdef.suggestion and rdef.suggestion.kind != "none":
            params = {
                k: resolver(f"suggestion.params.{k}").value(v)
                for k, v in rdef.suggestion.params.items()
            }
            model = SUGGESTION_PARAMS[rdef.suggestion.kind]
            try:
                checked = model.model_validate(params)
            except ValidationError as exc:
                err = exc.errors()[0]
                name = str(err["loc"][0]) if err["loc"] else ""
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    hint = difflib.get_close_matches(name, list(model.model_fields), n=1)
                    msg = f"unknown parameter {name!r} for {rdef.suggestion.kind}" + (
                        f"; did you mean {hint[0]!r}?" if hint else ""
                    )
                raise PackError(msg, field=f"suggestion.params.{name}".rstrip(".")) from None
            params = checked.model_dump(exclude_none=True)
            named = params.get("daily_max_field")
            if named is not None and named not in fields:
                hint = difflib.get_close_matches(named, sorted(fields), n=1)
                raise PackError(
                    f"unknown fact field {named!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else ""),
                    field="suggestion.params.daily_max_field",
                )
            suggestion = SuggestionSpec(rdef.suggestion.kind, params)
        for ev in rdef.evidence:
            if ev not in evidence:
                raise PackError(f"unknown evidence id {ev!r}", field="evidence")
        for orr in rdef.override_reasons:
            if orr not in pack.override_reasons:
                raise PackError(f"unknown override reason {orr!r}", field="override_reasons")
        if rdef.group and rdef.group not in fields:
            raise PackError(f"group field {rdef.group!r} is not a fact field", field="group")
    except PackError as exc:
        raise PackError(exc.message, file=file, rule=rule_id, field=exc.field) from None
    allowed = set(fields) | set(variables)
    _check_template(rdef.summary, allowed, (file, rule_id, "summary"))
    _check_template(rdef.detail, allowed, (file, rule_id, "detail"))
    return CompiledRule(
        id=rule_id,
        title=render(rdef.title, variables),
        category=rdef.category,
        severity=severity,
        fact_kind=rdef.fact,
        hooks=tuple(rdef.hooks),
        summary=rdef.summary,
        detail=rdef.detail,
        vars=variables,
        evidence=tuple(rdef.evidence),
        suggestion=suggestion,
        override_reasons=tuple(rdef.override_reasons) or tuple(pack.default_override_reasons),
        group=rdef.group,
        position=position,
        conditions=tuple({"all": [{"m": cond.conjunction_to_durable(t)}]} for t in terms),
        unless_offered=rdef.unless_offered,
        unless_pack=rdef.unless_pack,
        tree=tree,
        join_worst=rdef.join_worst,
        never_alone=rdef.never_alone,
    )


def pack_folder(rules_dir: Path, pack_id: str) -> Path:
    folder = rules_dir / pack_id
    if not (folder / "pack.yaml").is_file():
        raise PackError(f"no pack {pack_id!r} under {rules_dir}")
    return folder
