"""The only door to durable_rules: compile rulesets, run one isolated session per evaluation.

durable_rules 2.0.28 is a C rete engine (``durable_rules_engine``) under a Python layer
(``durable.engine``/``durable.lang``) built for a long-running, callback-driven service. Used
naively it hangs, segfaults or leaks; every hazard below was measured against 2.0.28, is owned
here, and has a test in ``tests/engine/test_runtime.py``:

* ``durable.engine.Host`` starts timer threads in its constructor and ``durable.lang`` drags in
  the Flask/Redis parts; neither is used. ``Ruleset.do_actions`` is not used either: after every
  action it writes the session state back (``update_state``), and the state is itself a fact
  ``{"sid": .., "id": .., "$s": 1}`` run through the same rete network, so any rule that can
  match it (a sentinel that matches every fact, or a plain ``$nex`` test, which the pack
  compiler emits for "field is absent") re-fires forever. ``Ruleset.__init__`` also serialises
  with ``json.dumps``, which writes ``1e-05``; durable's number parser only accepts an exponent
  after a ``.`` and rejects that definition. So this module compiles with
  ``durable_rules_engine.create_ruleset`` and drives the C calls itself (assert, start action,
  complete action, abandon, delete): no ``Closure``/``Content``/``Promise`` per firing, which is
  also what makes it 5-13x faster than ``do_actions`` (figures below).
* Deleting a session for which no action was ever started frees uninitialised pointers and
  segfaults the process (``createStateNode`` never initialises its action context). Every
  session therefore starts with our own state fact carrying ``"$s": 1``, matched by a
  lowest-priority sentinel rule, so ``start_action_for_state`` always succeeds before the
  session is deleted, whatever happens in between.
* A fact that matches no rule is reported as "not handled" (``MessageNotHandledException`` in
  the Python layer); here it is just return code 1 from the batch assert and is ignored.
* Messages are de-duplicated by a 32-bit FNV-1a hash of their ``id`` text, so two equal facts
  without ids (or ids ``"2"`` and ``2``) are "already observed", and a hash collision between two
  ids would silently drop a fact. Facts get ids ``0..n-1`` and the state fact the constant id
  ``_STATE_ID``, whose hashes are all distinct up to ``MAX_FACTS`` (checked by a test).
* Sessions are looked up by the hash of the sid alone, and at most 1,024 may be live per
  ruleset. One process-wide lock means at most one live session exists at any time, and it is
  always deleted (``finally``); ``get_state`` on a deleted session raises
  ``durable_rules_engine.error`` "Could not get state, error code: 309" (``ERR_SID_NOT_FOUND``).
* The C core never releases the GIL and keeps global handle tables, so compile and evaluate run
  under ``_ENGINE_LOCK``; normalisation and JSON encoding happen outside it.
* Facts hold at most 255 properties in the engine (we allow 200 user keys); integers are read
  with ``atoll`` (int64 only); NaN and infinities are not JSON the engine can compare. Floats
  are not rounded: written as ``repr`` (with ``1e-05`` spelled ``1.0e-05``) they come back from
  ``atof`` bit-exact, so every comparison agrees with Python (property-tested), including
  ``1e-300 > 0``; an int beyond 2**53 compared with a float is converted to double first.
* The compiler keeps the tests below one node of its network in a 512-slot table and loops
  forever (holding the GIL) when a 513th is added, e.g. 513 equality rules on one field, or 30
  rules that each ``$or`` 20 values of it. ``install`` models the network and refuses more than
  ``_MAX_FANOUT`` (500) tests below one node with ``PackError`` instead; 300 rules with 600
  different tests spread over two levels compile fine.
* Each rule is compiled with ``cap`` so one action delivers every fact the rule matched in the
  session (one C round trip per fired rule instead of per match); the fact ids are read from the
  action text with a regex rather than ``json.loads`` (which was 2/3 of the cost for dense
  matches). Rule ids are mapped to internal action names ``r0, r1, ...``.

Condition language (durable_rules JSON, what ``install`` takes; each operator has a test):
equality ``{"f": v}``, ``$neq``, ``$gt``, ``$gte``, ``$lt``, ``$lte`` (numbers; strings compare
bytewise on their JSON text), ``$ex``/``$nex`` (``{"$ex": {"f": 1}}``), ``$and``, ``$or``,
``$mt``/``$imt`` (regex, full match). There is no ``$in``/``$nin`` (the compiler rejects it):
write ``$or`` of equalities. A comparison on an absent field is false (``$neq`` included).
``True == 1``, ``False == 0`` and ``2 == 2.0``, as in Python. A test object with two keys
silently ignores the second, and a string compared with a number is compared as text (``"9" >
10``, ``"2" == 2.5``): ``install`` rejects the first and both ``install`` and ``evaluate``
reject the second (fields are typed by the constants the rules compare them with).

Measured with durable_rules 2.0.28, Python 3.11, on a shared 2-vCPU box (best of repeated
runs; runs contended by other processes were 2-3x slower). "selective": ~10% of the rules fire
per fact; "dense": 50-80% fire. ``do_actions``: the same rules through ``Ruleset.assert_facts``
+ ``do_actions`` with a sentinel that cannot match the state (prior art: 0.15/0.5/2.5 ms).

=====================  ======================  ======================  ===================
evaluate()             selective               dense                   do_actions sel/dense
=====================  ======================  ======================  ===================
1 fact  x 20 rules     0.055 ms (2 matches)    0.10 ms (16 matches)    0.26 / 0.47 ms
5 facts x 80 rules     0.26 ms (40 matches)    0.61 ms (254 matches)   1.2 / 6.4 ms
20 facts x 80 rules    0.73 ms (176 matches)   1.9 ms (1018 matches)   5.2 / 25 ms
=====================  ======================  ======================  ===================

About half of the dense figures is Python per match (building ``Match``), the rest is the C
core. Compiling 60 rules on one property takes ~3 ms (500: ~20 ms). RSS is flat over 100,000
evaluations (``test_memory_is_flat_over_100k_evaluations``).
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import durable_rules_engine as _dre

from cds.errors import EngineError, PackError

__all__ = [
    "MAX_FACT_KEYS",
    "MAX_FACTS",
    "Match",
    "RuleRuntime",
    "default_runtime",
    "normalise_fact",
]

MAX_FACT_KEYS = 200
"""User keys per fact; the engine's hard limit is 255 properties (incl. ``sid`` and ``id``)."""

MAX_FACTS = 10_000
"""Facts per evaluation; the ids ``0..MAX_FACTS-1`` and ``_STATE_ID`` have distinct FNV-1a
hashes (checked by a test), so durable never takes two of our facts for one."""

_INT64 = 2**63
_SENTINEL = "s"  # user rules are r0, r1, ...
_SENTINEL_TEXT = '{"s":'  # how an action of the sentinel starts
_SENTINEL_PRI = 65535  # priorities are unsigned short; lower fires first
_CAP = 65535  # ``cap`` is unsigned short too
_STATE_ID = "$state"
# The fact ids as they appear at the start of each fact's JSON text (see ``evaluate``).
_FACT_ID = re.compile(r'\{"id": (\d+), "sid": "')
# Numbers outside strings whose mantissa has no "." (json.dumps writes 1e-05, 1e+20): the
# engine's parser only takes an exponent after a fraction. Strings are matched first so digits
# inside them are skipped; the lookbehind keeps 2.5e-05 (fraction digits "5") untouched.
_BARE_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\d.])(-?\d+)([eE][-+]?\d+)')
_RESERVED_KEYS = frozenset({"sid", "id"})
_RULE_KEYS = frozenset({"all", "any"})


@dataclass(frozen=True, slots=True)
class Match:
    """One rule that fired for one fact."""

    rule_id: str
    fact: dict[str, Any]  # the fact as asserted (normalised), without the internal sid/id keys
    # Matches of the same fact share one dict (made by normalise_fact, not the caller's).


def _action(text: str) -> str:
    """The action name in an action's text, which is ``{"<action>": <frames>}``."""
    return text[2 : text.index('"', 2)]


def _exponent_fix(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) is None else f"{match.group(1)}.0{match.group(2)}"


def _engine_json(value: Any) -> str:
    """JSON text durable's parser reads back exactly (``1e-05`` -> ``1.0e-05``)."""
    text = json.dumps(value, allow_nan=False)
    return _BARE_EXPONENT.sub(_exponent_fix, text) if "e" in text or "E" in text else text


def _normalise(fact: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """``normalise_fact`` plus whether a float will be written in exponent form."""
    if not isinstance(fact, Mapping):
        raise EngineError(f"a fact must be a mapping, not {type(fact).__name__}")
    out: dict[str, Any] = {}
    exponent = False
    for key, value in fact.items():
        if not isinstance(key, str) or not key or key[0] == "$" or key in _RESERVED_KEYS:
            raise EngineError(
                f"fact key {key!r}: keys are non-empty strings; sid, id and $... are the engine's"
            )
        kind = type(value)  # exact types first: this loop runs for every key of every fact
        if kind is str or kind is bool:
            out[key] = value
        elif kind is float or isinstance(value, float):
            if not math.isfinite(value):
                raise EngineError(f"fact {key!r}: {value} is not a finite number")
            if value == 0.0:
                value = 0.0  # -0.0 -> 0.0 (equal anyway)
            elif not 1e-4 <= abs(value) < 1e16:
                exponent = True  # repr() uses exponent notation exactly outside this range
            out[key] = value
        elif kind is int or isinstance(value, int):
            if not -_INT64 <= value < _INT64:
                raise EngineError(f"fact {key!r}: integer {value} is outside the engine's int64")
            out[key] = value
        elif value is None:
            continue
        elif isinstance(value, str):
            out[key] = value
        else:
            raise EngineError(
                f"fact {key!r}: {type(value).__name__} is not allowed (facts are flat: "
                "str, bool, int, float)"
            )
    if len(out) > MAX_FACT_KEYS:
        raise EngineError(f"a fact has {len(out)} keys; the limit is {MAX_FACT_KEYS}")
    return out, exponent


def normalise_fact(fact: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one flat fact and make it engine-safe.

    Values may be str, bool, int (int64) or finite float; ``None`` values are dropped (a missing
    key means unknown). Floats keep their exact value (``-0.0`` becomes ``0.0``), so the engine
    compares exactly what Python would: no rounding, which would make ``1e-10 > 0`` false. Floats
    whose ``repr`` uses an exponent (1e-05, 5e-324, 1e+20) are written to the engine as
    ``1.0e-05``, because durable's parser rejects ``1e-05`` but reads ``1.0e-05`` back exactly
    (``atof``). NaN/inf, nested values, reserved keys (``sid``, ``id``, anything starting with
    ``$``) and more than ``MAX_FACT_KEYS`` keys raise ``EngineError``.
    """
    return _normalise(fact)[0]


@dataclass(frozen=True)
class _Compiled:
    name: str
    handle: int
    rule_ids: dict[str, str]  # internal action name -> rule_id
    field_kinds: dict[str, str]  # field -> "str" | "num", as the rules compare it


_LEAF_OPS = frozenset({"$eq", "$neq", "$gt", "$gte", "$lt", "$lte", "$mt", "$imt", "$ex", "$nex"})
_MAX_FANOUT = 500
"""Tests hanging off one node of the alpha network. durable_rules keeps a node's children in a
512-slot open-addressed table and its compiler loops forever looking for a free slot once the
table is full (measured: 512 equality tests on one field compile in 20 ms, 513 never return)."""


class _Shape:
    """Checks a ruleset before durable_rules sees it (the compiler cannot be interrupted).

    Mirrors how ``rete.c`` builds the alpha network: ``$and`` chains its items, ``$or`` hangs
    each item off the parent and joins them in a new forward node, equal tests under the same
    parent share a node. Also records which fields are compared with strings and which with
    numbers (``_field_kinds``), because the engine compares a string with a number by printing
    the number and comparing text: ``"9" > 10`` and ``"2" == 2.5`` are both true.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: dict[tuple[Any, ...], int] = {}
        self.children: dict[int, int] = {}
        self.kinds: dict[str, str] = {}

    def _error(self, message: str, rule_id: str | None) -> PackError:
        return PackError(f"ruleset {self.name!r}: {message}", rule=rule_id)

    def _child(self, parent: int, key: tuple[Any, ...], rule_id: str | None) -> int:
        node = self.nodes.get((parent, key))
        if node is None:
            node = self.nodes[(parent, key)] = len(self.nodes) + 1
            if key[0] != "$nex":  # $nex children live in a separate list
                count = self.children[parent] = self.children.get(parent, 0) + 1
                if count > _MAX_FANOUT:
                    raise self._error(
                        f"more than {_MAX_FANOUT} different tests at one point of the rule "
                        "network (durable_rules' compiler hangs past 512); split the ruleset",
                        rule_id,
                    )
        return node

    def expression(self, expr: Any, parent: int, rule_id: str | None) -> int:
        if not isinstance(expr, Mapping) or len(expr) != 1:
            raise self._error(
                f"a test must be an object with exactly one key (durable_rules silently ignores "
                f"all but the first; combine tests with $and), got {expr!r}",
                rule_id,
            )
        ((key, value),) = expr.items()
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple) or not value:
                raise self._error(f"{key} needs a non-empty list", rule_id)
            if key == "$and":
                for item in value:
                    parent = self.expression(item, parent, rule_id)
                return parent
            forward = self.nodes[("$or", len(self.nodes))] = len(self.nodes) + 1
            for item in value:
                end = self.expression(item, parent, rule_id)
                self._child(end, ("$forward", forward), rule_id)
            return forward
        if key in _LEAF_OPS:
            if not isinstance(value, Mapping) or len(value) != 1:
                raise self._error(f"{key} takes exactly one field, got {value!r}", rule_id)
            ((field, const),) = value.items()
            op = key
        elif key.startswith("$"):
            hint = " (there is no $in: use $or of equalities)" if key in ("$in", "$nin") else ""
            raise self._error(f"unsupported operator {key}{hint}", rule_id)
        else:
            op, field, const = "$eq", key, value
        if const is None or isinstance(const, list | tuple):
            raise self._error(f"{field!r}: {const!r} is not a value to compare with", rule_id)
        if op not in ("$ex", "$nex"):
            kind = "str" if op in ("$mt", "$imt") else _kind(const)
            if kind is not None and self.kinds.setdefault(field, kind) != kind:
                raise self._error(
                    f"field {field!r} is compared with both strings and numbers", rule_id
                )
        return self._child(parent, (op, field, json.dumps(const, sort_keys=True)), rule_id)

    def rule(self, conditions: Sequence[Any], rule_id: str | None) -> None:
        for condition in conditions:
            if not isinstance(condition, Mapping) or len(condition) != 1:
                raise self._error("each condition is one {alias: test} object", rule_id)
            ((alias, expr),) = condition.items()
            if not isinstance(alias, str) or not alias or "$" in alias:
                raise self._error(f"unsupported condition alias {alias!r}", rule_id)
            self.expression(expr, 0, rule_id)


def _kind(value: Any) -> str | None:
    """How the engine compares a value: as text or as a number (bools count as 0/1)."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, int | float):
        return "num"
    return None  # a reference to another fact's field: not checked


def _definition(
    name: str, rules: Mapping[str, Mapping[str, Any]], priorities: Mapping[str, int]
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, str]]:
    """The durable_rules definition, action name -> rule_id, and field -> "str"/"num"."""
    unknown = set(priorities) - set(rules)
    if unknown:
        raise PackError(f"ruleset {name!r}: priorities for unknown rules {sorted(unknown)}")
    shape = _Shape(name)
    shape._child(0, ("$eq", "$s", "1"), None)  # the sentinel's test is in the network too
    definition: dict[str, dict[str, Any]] = {}
    rule_ids: dict[str, str] = {}
    for index, (rule_id, rule) in enumerate(rules.items()):
        if not isinstance(rule_id, str) or not rule_id:
            raise PackError(f"ruleset {name!r}: rule ids must be non-empty strings")
        if not isinstance(rule, Mapping) or len(rule) != 1 or set(rule) - _RULE_KEYS:
            raise PackError(
                f"ruleset {name!r}: a rule is one of {{'all': [...]}} or {{'any': [...]}}",
                rule=rule_id,
            )
        ((kind, conditions),) = rule.items()
        if not isinstance(conditions, list | tuple) or not conditions:
            raise PackError(f"ruleset {name!r}: {kind!r} needs a non-empty list", rule=rule_id)
        shape.rule(conditions, rule_id)
        pri = priorities.get(rule_id, 0)
        if isinstance(pri, bool) or not isinstance(pri, int) or not 0 <= pri < _SENTINEL_PRI:
            raise PackError(f"ruleset {name!r}: priority must be an int in 0..65534", rule=rule_id)
        action = f"r{index}"
        definition[action] = {kind: list(conditions), "pri": pri, "cap": _CAP}
        rule_ids[action] = rule_id
    definition[_SENTINEL] = {"all": [{"m": {"$s": 1}}], "pri": _SENTINEL_PRI}
    return definition, rule_ids, shape.kinds


_COMPILE_ERRORS = {
    106: "too many tests at one point of the rule network",
    107: "more than 128 $nex tests at one point of the rule network",
    108: "more than 256 rules end at one point of the rule network",
    501: "invalid regular expression",
    508: "invalid regular expression",
}


def _compile(name: str, definition: Mapping[str, Any]) -> int:
    try:
        text = _engine_json(definition)
    except (TypeError, ValueError) as e:
        raise PackError(f"ruleset {name!r}: definition is not JSON: {e}") from e
    try:
        return int(_dre.create_ruleset(name, text))
    except _dre.error as e:
        code = re.search(r"error code: (\d+)", str(e))
        why = _COMPILE_ERRORS.get(int(code.group(1)), "") if code else ""
        raise PackError(
            f"ruleset {name!r}: durable_rules rejected it ({e}{'; ' if why else ''}{why})"
        ) from e


class RuleRuntime:
    """Process-wide owner of durable_rules rulesets, driven in-process only."""

    def __init__(self) -> None:
        self._rulesets: dict[str, _Compiled] = {}
        self._new_sid: Callable[[], str] = lambda: uuid.uuid4().hex
        # Test hook: called with (rule_id, action text) for every firing; may raise.
        self._on_fire: Callable[[str, str], None] | None = None

    def install(
        self,
        name: str,
        rules: Mapping[str, Mapping[str, Any]],
        *,
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        """Compile ``rules`` (rule_id -> ``{"all": [...]}``/``{"any": [...]}``) as ruleset ``name``.

        durable_rules cannot replace a ruleset, so a name is installed once (``PackError`` on a
        second install; callers version their names). ``priorities`` (0..65534, lower fires
        first) only order firings, which ``evaluate`` does not expose. A definition the
        compiler rejects raises ``PackError`` naming the ruleset and, where one rule alone is
        rejected, that rule.
        """
        if not isinstance(name, str) or not name:
            raise PackError("a ruleset needs a non-empty name")
        definition, rule_ids, kinds = _definition(name, rules, priorities or {})
        with _ENGINE_LOCK:
            if name in self._rulesets:
                raise PackError(f"ruleset {name!r} is already installed")
            try:
                handle = _compile(name, definition)
            except PackError as e:
                raise self._blame(name, definition, rule_ids) or e from e.__cause__
            self._rulesets[name] = _Compiled(name, handle, rule_ids, kinds)

    @staticmethod
    def _blame(
        name: str, definition: Mapping[str, Any], rule_ids: Mapping[str, str]
    ) -> PackError | None:
        """Compile each rule alone to name the one durable_rules rejects (caller holds lock)."""
        for action, rule_id in rule_ids.items():
            try:
                handle = _compile(f"{name}?{action}", {action: definition[action]})
            except PackError as e:
                return PackError(
                    f"ruleset {name!r}: durable_rules rejected this rule ({e.__cause__ or e})",
                    rule=rule_id,
                )
            _dre.delete_ruleset(handle)
        return None

    def has(self, name: str) -> bool:
        return name in self._rulesets

    def evaluate(self, name: str, facts: Sequence[Mapping[str, Any]]) -> list[Match]:
        """Run ``facts`` through ruleset ``name`` in a fresh session; every (rule, fact) match.

        Matches are sorted by rule_id then fact position, at most one per (rule, fact); the
        sentinel never shows. Any engine failure, or an exception while handling a firing,
        raises ``EngineError``; the session is deleted in every case.
        """
        compiled = self._rulesets.get(name)
        if compiled is None:
            raise EngineError(f"ruleset {name!r} is not installed")
        if len(facts) > MAX_FACTS:
            raise EngineError(f"{len(facts)} facts in one evaluation; the limit is {MAX_FACTS}")
        normalised: list[dict[str, Any]] = []
        exponent = False
        kinds = compiled.field_kinds
        for fact in facts:
            clean, exp = _normalise(fact)
            for key in kinds.keys() & clean.keys() if kinds else ():
                if kinds[key] != ("str" if isinstance(clean[key], str) else "num"):
                    raise EngineError(
                        f"fact {key!r} is {clean[key]!r} but ruleset {name!r} compares it with "
                        f"{'strings' if kinds[key] == 'str' else 'numbers'} (durable_rules "
                        "would compare the text of the number)"
                    )
            normalised.append(clean)
            exponent |= exp
        if not normalised:
            return []
        sid = self._new_sid()
        # "id" then "sid" first in every fact: _FACT_ID finds them in the action text.
        payload = json.dumps([{"id": i, "sid": sid, **f} for i, f in enumerate(normalised)])
        if exponent:
            payload = _BARE_EXPONENT.sub(_exponent_fix, payload)
        with _ENGINE_LOCK:
            texts = self._run(compiled, sid, payload)
        fired: dict[str, set[int]] = {}  # rule_id -> fact positions: at most once each
        for text in texts:
            rule_id = compiled.rule_ids[_action(text)]
            fired.setdefault(rule_id, set()).update(map(int, _FACT_ID.findall(text)))
        return [
            Match(rule_id, normalised[i])
            for rule_id in sorted(fired)
            for i in sorted(fired[rule_id])
        ]

    def _run(self, compiled: _Compiled, sid: str, payload: str) -> list[str]:
        """One session: state fact, facts, every action, then delete. Caller holds the lock.

        Returns the text of every action but the sentinel's (parsed after the lock is released).
        """
        handle = compiled.handle
        state: int | None = None
        started = False
        texts: list[str] = []
        try:
            state = _dre.update_state(handle, f'{{"sid": "{sid}", "id": "{_STATE_ID}", "$s": 1}}')
            code, _ = _dre.assert_facts(handle, payload)
            if code not in (0, 1):  # 1: some fact matched no rule, which is fine
                raise EngineError(f"durable_rules refused the facts (result code {code})")
            result = _dre.start_action_for_state(handle, state)
            if result is None:
                raise EngineError("durable_rules started no action (sentinel missing)")
            started = True
            text: str | None = result[1]
            on_fire = self._on_fire
            while text is not None:
                if not text.startswith(_SENTINEL_TEXT):
                    if on_fire is not None:
                        on_fire(compiled.rule_ids[_action(text)], text)
                    texts.append(text)
                text = _dre.complete_and_start_action(handle, state)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"durable_rules failed in {compiled.name!r}: {e!r}") from e
        finally:
            _delete_session(handle, sid, state, started)
        return texts

    def _state(self, name: str, sid: str) -> dict[str, Any] | None:
        """The live state of session ``sid`` (tests): ``None`` once it was deleted."""
        with _ENGINE_LOCK:
            try:
                return json.loads(_dre.get_state(self._rulesets[name].handle, sid))
            except _dre.error as e:
                if "error code: 309" in str(e):  # ERR_SID_NOT_FOUND
                    return None
                raise


def _delete_session(handle: int, sid: str, state: int | None, started: bool) -> None:
    """Delete a session (caller holds the lock).

    Only safe once an action was started for it: before that the C core frees uninitialised
    pointers. Our state fact always gives the sentinel an action to start, so start it if the
    evaluation failed early, then abandon whatever action is open and delete.
    """
    if state is None:  # pragma: no cover - update_state itself failed: nothing safe to delete
        return
    try:
        if not started:
            started = _dre.start_action_for_state(handle, state) is not None
        if started:
            _dre.abandon_action(handle, state)
            _dre.delete_state(handle, sid)
    except _dre.error as e:  # pragma: no cover - nothing left to do but report
        raise EngineError(f"durable_rules could not delete session {sid}: {e}") from e


_ENGINE_LOCK = threading.RLock()  # re-entrant only so test hooks may call _state
_DEFAULT: RuleRuntime | None = None
_DEFAULT_LOCK = threading.Lock()


def default_runtime() -> RuleRuntime:
    """The process-wide runtime (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = RuleRuntime()
    return _DEFAULT
