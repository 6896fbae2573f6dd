"""A test EHR that signs CDS Hooks JWTs (ES384 or RS384) with a key it generates.

For tests, benchmarks and integrators checking their set-up: it writes the JWKS and the
``CDS_TRUSTED_ISSUERS`` file the service reads, and mints tokens exactly as an EHR does
(``iss``, ``aud`` = the URL called, ``exp``, ``iat``, ``jti``; header ``kid``, ``typ``).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey


class TestIssuer:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        folder: Path,
        *,
        iss: str = "https://ehr.test/issuer",
        alg: str = "ES384",
        tenant: str | None = None,
    ) -> None:
        self.iss, self.alg, self.tenant = iss, alg, tenant
        kid = f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        self.key: ECKey | RSAKey = (
            ECKey.generate_key("P-384", parameters={"kid": kid})
            if alg == "ES384"
            else RSAKey.generate_key(2048, parameters={"kid": kid})
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.jwks_path = folder / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [self.key.as_dict(private=False)]}))
        entry: dict[str, Any] = {"iss": iss, "jwks_file": str(self.jwks_path)}
        if tenant:
            entry["tenant"] = tenant
        self.issuers_path = folder / "issuers.json"
        self.issuers_path.write_text(json.dumps([entry]))
        self.minted: list[str] = []  # tokens issued, so tests can prove none leaks

    def token(self, aud: str, *, lifetime: int = 300, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.iss,
            "sub": "ehr-client",
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        if self.tenant:
            payload["tenant"] = self.tenant
        payload.update(claims)
        header = {"alg": self.alg, "typ": "JWT", "kid": self.key.kid}
        token = jwt.encode(header, payload, self.key, algorithms=[self.alg])
        self.minted.append(token)
        return token

    def header(self, aud: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(aud, **claims)}"}
