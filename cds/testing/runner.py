"""Running the invariants under hypothesis, and the ``cds rules test --properties`` report.

:data:`INVARIANTS` pairs each check with the requests to try it on, generated for the
drug of the pack under test (``cds.testing.formulary``): that pack's products, routes,
interacting classes and problems. A run in which no example held an order of the pack's
drug fails (it would have tested nothing), whatever the check said.
"""

from __future__ import annotations

import json
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hypothesis import example, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.strategies import SearchStrategy

from cds.testing import strategies as strat
from cds.testing.checks import (
    InvariantViolation,
    check_determinism,
    check_dose_monotonicity,
    check_interaction_monotonicity,
    check_no_alert_loops,
    check_order_independence,
    check_prefetch_equivalence,
    check_renal_monotonicity,
    check_suggestions_safe,
    check_unit_invariance,
    check_valid_cards,
)
from cds.testing.evaluation import Packs, pack_list, registry_for
from cds.testing.formulary import PackDrug
from cds.testing.rewrites import drug_orders

JSON = dict[str, Any]

__all__ = [
    "INVARIANTS",
    "SHRINK_SECONDS",
    "Invariant",
    "PropertyResult",
    "pack_profiles",
    "run_properties",
    "run_properties_cli",
    "run_property",
    "save_failure",
]


@dataclass(frozen=True)
class Invariant:
    """An invariant as the property runner sees it: the check, the requests to try it on
    (for a pack's drug, at an instant), and strategies for the check's extra keyword
    arguments (for that drug)."""

    name: str
    check: Callable[..., None]
    requests: Callable[[PackDrug, datetime], SearchStrategy[JSON]]
    extras: Mapping[str, Callable[[PackDrug], SearchStrategy[Any]]] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.check.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ")


def _requests(drug: PackDrug, now: datetime) -> SearchStrategy[JSON]:
    return strat.hook_requests(drug=drug, now=now)


def _order_requests(drug: PackDrug, now: datetime) -> SearchStrategy[JSON]:
    """Order hooks, products whose doses count in the regimen (the dose fixes)."""
    return strat.hook_requests(
        drug=drug, now=now, hooks=("order-sign", "order-select"), regimen_only=True
    )


def _dose_requests(drug: PackDrug, now: datetime) -> SearchStrategy[JSON]:
    """Every hook, products whose doses count in the regimen (the dose ceilings)."""
    return strat.hook_requests(drug=drug, now=now, regimen_only=True)


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "valid cards",
        check_valid_cards,
        lambda drug, now: strat.hook_requests(drug=drug, now=now, damage_required=True),
    ),
    Invariant("determinism", check_determinism, _requests),
    Invariant(
        "prefetch = fetched",
        check_prefetch_equivalence,
        _requests,
        {
            "fetch_keys": lambda drug: (
                st.none() | st.frozensets(st.sampled_from(strat.PREFETCH_KEYS), min_size=1)
            )
        },
    ),
    Invariant("unit invariance", check_unit_invariance, _requests),
    Invariant("monotonic in dose", check_dose_monotonicity, _dose_requests),
    Invariant("monotonic in renal function", check_renal_monotonicity, _requests),
    Invariant(
        "monotonic in interactions",
        check_interaction_monotonicity,
        _requests,
        {"drug": lambda drug: strat.interacting_drugs(drug, comedications=False)},
    ),
    Invariant("safe suggestions", check_suggestions_safe, _order_requests),
    Invariant(
        "no alert loops",
        check_no_alert_loops,
        lambda drug, now: strat.suggestion_requests(drug=drug, now=now),
    ),
    Invariant(
        "order independence",
        check_order_independence,
        _requests,
        {"seed": lambda drug: st.integers(0, 2**16)},
    ),
)


@dataclass
class PropertyResult:
    invariant: str
    profile: str
    examples: int
    seconds: float
    ok: bool
    message: str = ""
    request: JSON | None = None
    report: list[str] = field(default_factory=list)  # hypothesis' own output
    with_drug: int = 0  # examples holding an order of the pack's drug
    drug: str = ""


SHRINK_SECONDS = 20.0


def _no_drug_message(invariant: Invariant, drug: PackDrug, count: int) -> str:
    return (
        f"[{invariant.name}] none of the {count} examples held an order of {drug.name} "
        f"(pack {drug.pack_id}): the invariant tested nothing. The requests must come from "
        f"the pack's own products (strategies with drug=drug_of(pack))."
    )


def run_property(
    invariant: Invariant,
    packs: Packs,
    *,
    now: datetime = strat.DEFAULT_NOW,
    settings_: settings | None = None,
    requests: SearchStrategy[JSON] | None = None,
    profile: str = "",
    shrink_seconds: float = SHRINK_SECONDS,
    examples: Sequence[tuple[JSON, Mapping[str, Any]]] = (),
    drug: PackDrug | None = None,
) -> PropertyResult:
    """Run one invariant under hypothesis; the result says how many examples ran, how
    many held an order of the pack's drug, how long it took, and (on failure) the shrunk
    request and the violation.

    ``drug``: whose orders the requests are generated for and counted (default: the
    first pack's). A run in which no example held one fails: it tested nothing.

    Shrinking a whole chart can take minutes; after ``shrink_seconds`` from the first
    failure, new candidates are no longer evaluated (they count as passing) while the
    failures already seen still fail, so hypothesis stops early and reports the smallest
    failing request found so far. ``examples``: (request, extra keyword arguments) pairs
    always tried first (known cases, regressions).
    """
    count = 0
    with_drug = 0
    plist = pack_list(packs)
    drug = drug or strat.drug_of(plist)
    extras = {k: v(drug) for k, v in invariant.extras.items()}
    failures: dict[str, BaseException] = {}
    first_failure: list[float] = []

    @given(
        request=requests if requests is not None else invariant.requests(drug, now),
        extra=st.fixed_dictionaries(extras),
    )
    def prop(request: JSON, extra: dict[str, Any]) -> None:
        nonlocal count, with_drug
        key = json.dumps([request, extra], sort_keys=True, default=str)
        if key in failures:
            raise failures[key]
        if first_failure and time.perf_counter() - first_failure[0] > shrink_seconds:
            return
        count += 1
        if drug_orders(request, drug):
            with_drug += 1
        try:
            invariant.check(request, plist, now, **extra)
        except Exception as exc:
            failures[key] = exc
            if not first_failure:
                first_failure.append(time.perf_counter())
            raise

    for request_, extra_ in examples:
        prop = example(request=request_, extra=dict(extra_))(prop)
    chosen = settings_ or strat.active_settings()
    if chosen.derandomize:  # each invariant its own fixed examples, not all the same ones
        prop = seed(zlib.crc32(invariant.name.encode()))(prop)
    test = chosen(prop)
    report: list[str] = []
    t0 = time.perf_counter()

    def result(ok: bool, message: str = "", request: JSON | None = None) -> PropertyResult:
        return PropertyResult(
            invariant.name,
            profile,
            count,
            time.perf_counter() - t0,
            ok,
            message,
            request,
            report,
            with_drug,
            drug.name,
        )

    try:
        with with_reporter(lambda text: report.append(str(text))):
            test()
    except InvariantViolation as exc:
        return result(False, str(exc), exc.request)
    except (Exception, HypothesisException) as exc:  # a crash is a failure too
        message = f"{type(exc).__name__}: {exc}"
        violations = [
            e for e in getattr(exc, "exceptions", []) if isinstance(e, InvariantViolation)
        ]
        return result(False, message[:4000], violations[0].request if violations else None)
    if not with_drug:
        return result(False, _no_drug_message(invariant, drug, count))
    return result(True)


def pack_profiles(rules_dir: Path, pack_id: str) -> list[str]:
    """The profiles a pack defines (``US``, ``UK``...), sorted."""
    import yaml

    data = yaml.safe_load((Path(rules_dir) / pack_id / "pack.yaml").read_text(encoding="utf-8"))
    return sorted((data.get("profiles") or {"US": {}}).keys())


def run_properties(
    rules_dir: Path,
    pack_id: str,
    *,
    profiles: Sequence[str] | None = None,
    settings_: settings | None = None,
    invariants: Sequence[Invariant] | None = None,
    now: datetime = strat.DEFAULT_NOW,
) -> list[PropertyResult]:
    """Every invariant (default: :data:`INVARIANTS`) for every profile of the pack
    (compiled once per profile), on requests generated for the pack's own drug."""
    results = []
    for profile in profiles or pack_profiles(rules_dir, pack_id):
        reg = registry_for(Path(rules_dir), pack_id, profile)
        for inv in invariants if invariants is not None else INVARIANTS:
            results.append(run_property(inv, reg, now=now, settings_=settings_, profile=profile))
    return results


def save_failure(result: PropertyResult, pack_id: str) -> Path | None:
    """Write a failing request where ``cds evaluate`` can replay it; return the path."""
    if result.request is None:
        return None
    folder = Path(tempfile.gettempdir()) / "cds-properties"
    folder.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in result.invariant).strip("-")
    path = folder / f"{pack_id}-{result.profile}-{slug}.json"
    path.write_text(json.dumps(result.request, indent=2), encoding="utf-8")
    return path


def run_properties_cli(rules_dir: Path, pack_id: str, console: Any) -> bool:
    """``cds rules test --properties``: run the invariants, print a table, explain failures.

    The hypothesis settings profile comes from ``$CDS_HYPOTHESIS_PROFILE`` (``ci`` by
    default, ``deep`` for many more examples).
    """
    from rich.table import Table

    from cds.errors import PackError

    profile_name = strat.active_settings_name()
    try:
        results = run_properties(rules_dir, pack_id)
    except PackError as exc:
        console.print(f"[red]FAIL[/red] {pack_id}: the pack does not compile: {exc}")
        return False
    failed = [r for r in results if not r.ok]
    drug = next((r.drug for r in results if r.drug), "the drug")
    table = Table(title=f"{pack_id}: pack invariants (hypothesis profile {profile_name})")
    for col, justify in (
        ("invariant", "left"),
        ("profile", "left"),
        ("examples", "right"),
        ("time", "right"),
        ("result", "left"),
        (f"with {drug}", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        table.add_row(
            r.invariant,
            r.profile,
            str(r.examples),
            f"{r.seconds:.1f} s",
            "[green]pass[/green]" if r.ok else "[red]FAIL[/red]",
            str(r.with_drug),
        )
    console.print(table)
    console.print(
        f"{pack_id}: {len(results)} invariant runs, {len(failed)} failed, "
        f"{sum(r.examples for r in results)} examples in "
        f"{sum(r.seconds for r in results):.0f} s"
    )
    for r in failed:
        console.print(f"\n[red]{r.invariant}[/red] ({r.profile}):")
        console.print(r.message, markup=False, highlight=False)
        path = save_failure(r, pack_id)
        if path is not None:
            console.print(
                f"minimal request saved: {path}\nreplay: CDS_PACKS={pack_id} cds evaluate {path} "
                f"--now {strat.DEFAULT_NOW.isoformat()} --profile {r.profile}",
                markup=False,
                highlight=False,
            )
    return not failed
