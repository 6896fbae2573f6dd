"""The packs being served, and their replacement without a restart.

A reload validates and compiles the new version first; only a pack that compiled
replaces the active one (a swap of a reference under a lock), so a broken pack never
replaces a working one and requests in flight finish on the version they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cds.engine.pack import CompiledPack, compile_pack, pack_folder
from cds.engine.runtime import RuleRuntime, default_runtime
from cds.errors import PackError

log = logging.getLogger("cds.packs")

ALL_PACKS = "*"  # as a pack id: every pack found in the rules folder


def resolve_pack_ids(rules_dir: Path, pack_ids: list[str]) -> list[str]:
    """``pack_ids`` with :data:`ALL_PACKS` replaced by every folder of ``rules_dir`` that
    holds a ``pack.yaml`` (sorted), each id once, in order."""
    out: list[str] = []
    for pid in pack_ids:
        if pid == ALL_PACKS:
            found = sorted(p.parent.name for p in Path(rules_dir).glob("*/pack.yaml"))
            if not found:
                raise PackError(f"no pack under {rules_dir}")
            out += found
        else:
            out.append(pid)
    return list(dict.fromkeys(out))


@dataclass
class ReloadResult:
    pack_id: str
    ok: bool
    version: str | None
    error: str | None = None
    changed: bool = False


@dataclass
class PackRegistry:
    rules_dir: Path
    pack_ids: list[str]
    profile: str
    runtime: RuleRuntime = field(default_factory=default_runtime)
    _active: dict[str, CompiledPack] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_errors: dict[str, str] = field(default_factory=dict)
    loaded_at: float = 0.0

    def __post_init__(self) -> None:
        self.pack_ids = resolve_pack_ids(self.rules_dir, list(self.pack_ids))

    def load(self) -> None:
        """Initial load: every configured pack must compile (fail fast at start-up)."""
        packs = {pid: self._compile(pid) for pid in self.pack_ids}
        with self._lock:
            self._active = packs
            self.loaded_at = time.time()

    def _compile(self, pack_id: str) -> CompiledPack:
        return compile_pack(pack_folder(self.rules_dir, pack_id), self.profile, self.runtime)

    def packs(self) -> list[CompiledPack]:
        with self._lock:
            return list(self._active.values())

    def get(self, pack_id: str) -> CompiledPack:
        with self._lock:
            return self._active[pack_id]

    def reload(self) -> list[ReloadResult]:
        """Recompile every pack; keep the previous one wherever the new one fails."""
        results = []
        for pid in self.pack_ids:
            try:
                new = self._compile(pid)
            except PackError as exc:
                self.last_errors[pid] = str(exc)
                log.error(
                    "pack %s failed to reload; still serving the previous version: %s", pid, exc
                )
                old = self._active.get(pid)
                results.append(ReloadResult(pid, False, old.version if old else None, str(exc)))
                continue
            with self._lock:
                old = self._active.get(pid)
                changed = old is None or old.digest != new.digest
                self._active[pid] = new
                self.loaded_at = time.time()
            self.last_errors.pop(pid, None)
            if changed:
                log.info("pack %s now serving version %s (%s)", pid, new.version, new.digest[:12])
            results.append(ReloadResult(pid, True, new.version, changed=changed))
        return results
