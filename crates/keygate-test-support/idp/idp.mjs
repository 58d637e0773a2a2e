// A real OpenID provider (panva's oidc-provider) on loopback for keygate's tests, plus a
// small helper API on a second loopback port that the Rust harness
// (`keygate_test_support::oidc`) drives.
//
// Usage: node idp.mjs [--port N] [--helper-port N]
//   (or IDP_PORT / IDP_HELPER_PORT; 0 or absent means any free port)
// Environment:
//   IDP_TOKEN_TTL     lifetime in seconds of client_credentials tokens (default 600)
//   IDP_DPOP_NONCE    "1" makes the token endpoint demand a DPoP nonce (RFC 9449 section 8)
//
// The provider is plain HTTP with issuer `http://127.0.0.1:<port>`. Its tokens live in
// oidc-provider's in-memory adapter, so they do not survive a restart.
//
// Once both servers listen it prints one line `READY <idp_port> <helper_port>` on stdout.
// It exits when stdin closes (so a test that dies never leaves node running) and on
// SIGTERM or SIGINT.
//
// Helper API (JSON in, JSON out):
//   POST /token   {resource?, scope?, dpop?, ttl_secs?, key_id?}
//                 -> {access_token, token_type, expires_in, scope?, jkt?, key_id?}
//   POST /key     {} -> {key_id, jkt}: a fresh ES256 DPoP key pair, kept for /proof
//   POST /proof   {key_id, htm, htu, access_token?, iat_offset?, jti?, nonce?,
//                  alg_override?, typ?, private_jwk?, other_key?, claims?, omit?}
//                 -> {proof}
//   POST /revoke  {token} -> {}: revokes at the revocation endpoint as the token's client
//   GET  /stats   -> {introspections, tokens, revocations, jwks}: requests that reached
//                  those endpoints of the provider
//   POST /pause   {ms} -> {}: every later introspection waits that long before it is answered
//   POST /fail    {status} -> {}: every later introspection answers that HTTP status with an
//                  OAuth error body (0 turns it off)

import { createHash, createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';

import {
  SignJWT,
  base64url,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
} from 'jose';
import Provider from 'oidc-provider';

// Fixed test credentials; the Rust harness has the same values as constants.
const TOKEN_CLIENT = { id: 'keygate-app', secret: 'keygate-app-secret-for-tests-only' };
const RS_CLIENT = { id: 'keygate-rs', secret: 'keygate-rs-secret-for-tests-only' };
// A resource server that authenticates with private_key_jwt (ES256): its public key, from
// the test-only private key beside this file (keygate-test-support reads the same file).
const RS_JWT_CLIENT = {
  id: 'keygate-rs-jwt',
  jwk: createPublicKey(readFileSync(new URL('./rs-client-key.pem', import.meta.url)))
    .export({ format: 'jwk' }),
};
const SCOPES = 'read write admin';
const RESOURCES = {
  'urn:keygate:opaque': 'opaque',
  'urn:keygate:jwt': 'jwt',
};
// Header through which the helper asks for a particular token lifetime.
const TTL_HEADER = 'x-keygate-token-ttl';

function arg(name, envName) {
  const i = process.argv.indexOf(name);
  if (i !== -1 && process.argv[i + 1] !== undefined) return process.argv[i + 1];
  return process.env[envName];
}

function portFrom(value) {
  const port = Number.parseInt(value ?? '0', 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`bad port ${value}`);
  }
  return port;
}

const defaultTtl = Number.parseInt(process.env.IDP_TOKEN_TTL ?? '600', 10);
const demandNonce = process.env.IDP_DPOP_NONCE === '1';

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

// --- The provider -------------------------------------------------------------------------

const stats = { introspections: 0, tokens: 0, revocations: 0, jwks: 0 };
let introspectionDelayMs = 0;
let introspectionFailStatus = 0;

const idpServer = http.createServer();
const idpPort = await listen(idpServer, portFrom(arg('--port', 'IDP_PORT')));
const issuer = `http://127.0.0.1:${idpPort}`;

function clientCredentialsTtl(ctx) {
  const asked = Number.parseInt(ctx?.get?.(TTL_HEADER) ?? '', 10);
  if (Number.isInteger(asked) && asked > 0) return asked;
  return defaultTtl;
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: TOKEN_CLIENT.id,
      client_secret: TOKEN_CLIENT.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPES,
    },
    {
      client_id: RS_CLIENT.id,
      client_secret: RS_CLIENT.secret,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: RS_JWT_CLIENT.id,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [RS_JWT_CLIENT.jwk] },
    },
  ],
  scopes: SCOPES.split(' '),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: {
      enabled: true,
      // Only the resource server client (and a token's own client) may see a token's
      // details; any other caller gets `{"active": false}`.
      allowedPolicy: async (ctx, client, token) => (
        client.clientId === RS_CLIENT.id
        || client.clientId === RS_JWT_CLIENT.id
        || client.clientId === token.clientId
      ),
    },
    dPoP: {
      enabled: true,
      nonceSecret: demandNonce ? randomBytes(32) : undefined,
      requireNonce: () => demandNonce,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resource) => {
        const accessTokenFormat = RESOURCES[resource];
        if (!accessTokenFormat) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return {
          audience: resource,
          scope: SCOPES,
          accessTokenFormat,
          accessTokenTTL: clientCredentialsTtl(ctx),
        };
      },
    },
  },
  ttl: {
    ClientCredentials: (ctx) => clientCredentialsTtl(ctx),
  },
});

// Counts the requests that reach the endpoints the tests care about, and injects the
// configured introspection delay or failure.
provider.use(async (ctx, next) => {
  if (ctx.path === '/token/introspection') {
    stats.introspections += 1;
    if (introspectionDelayMs > 0) {
      await new Promise((resolve) => { setTimeout(resolve, introspectionDelayMs); });
    }
    if (introspectionFailStatus !== 0) {
      ctx.status = introspectionFailStatus;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'injected by the test' };
      return;
    }
  } else if (ctx.path === '/token/revocation') {
    stats.revocations += 1;
  } else if (ctx.path === '/token') {
    stats.tokens += 1;
  } else if (ctx.path === '/jwks') {
    stats.jwks += 1;
  }
  await next();
});

// oidc-provider logs through its own debug channel; keep stderr for real failures.
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc-provider server_error: ${err?.stack ?? err}\n`);
});

idpServer.on('request', provider.callback());

// --- DPoP keys and proofs -----------------------------------------------------------------

const keys = new Map();

async function newKey() {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const jkt = await calculateJwkThumbprint(publicJwk, 'sha256');
  const keyId = randomUUID();
  const key = { keyId, privateKey, publicKey, publicJwk, jkt };
  keys.set(keyId, key);
  return key;
}

function sha256b64(text) {
  return base64url.encode(createHash('sha256').update(text).digest());
}

function b64json(value) {
  return base64url.encode(Buffer.from(JSON.stringify(value)));
}

async function makeProof(key, {
  htm,
  htu,
  access_token: accessToken,
  iat_offset: iatOffset = 0,
  jti,
  nonce,
  alg_override: algOverride,
  typ = 'dpop+jwt',
  private_jwk: privateJwk = false,
  other_key: otherKey = false,
  claims = {},
  omit = [],
}) {
  const signer = otherKey ? await newKey() : key;
  const jwk = privateJwk ? await exportJWK(signer.privateKey) : signer.publicJwk;
  const payload = {
    htm,
    htu,
    iat: Math.floor(Date.now() / 1000) + iatOffset,
    jti: jti ?? randomUUID(),
  };
  if (accessToken !== undefined && accessToken !== null) payload.ath = sha256b64(accessToken);
  if (nonce !== undefined && nonce !== null) payload.nonce = nonce;
  Object.assign(payload, claims);
  for (const name of omit) delete payload[name];

  if (algOverride === 'none') {
    // An unsigned JWS (RFC 7515 appendix A.5): the header says none, the signature is empty.
    return `${b64json({ alg: 'none', typ, jwk })}.${b64json(payload)}.`;
  }
  if (algOverride === 'HS256') {
    const secret = randomBytes(32);
    return new SignJWT(payload).setProtectedHeader({ alg: 'HS256', typ, jwk }).sign(secret);
  }
  if (algOverride !== undefined && algOverride !== null && algOverride !== 'ES256') {
    throw new Error(`unsupported alg_override ${algOverride}`);
  }
  return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ, jwk }).sign(signer.privateKey);
}

// --- Calls to the provider over real HTTP -------------------------------------------------

function basic({ id, secret }) {
  const encode = (s) => encodeURIComponent(s);
  return `Basic ${Buffer.from(`${encode(id)}:${encode(secret)}`).toString('base64')}`;
}

async function requestToken({ resource, scope, dpop = false, ttl_secs: ttlSecs, key_id: keyId }) {
  const tokenEndpoint = `${issuer}/token`;
  const form = new URLSearchParams({ grant_type: 'client_credentials' });
  if (resource) form.set('resource', resource);
  if (scope) form.set('scope', scope);

  let key;
  if (dpop) {
    key = keyId ? keys.get(keyId) : await newKey();
    if (!key) throw new Error(`unknown key_id ${keyId}`);
  }

  let nonce;
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const headers = {
      authorization: basic(TOKEN_CLIENT),
      'content-type': 'application/x-www-form-urlencoded',
    };
    if (ttlSecs) headers[TTL_HEADER] = String(ttlSecs);
    if (key) headers.dpop = await makeProof(key, { htm: 'POST', htu: tokenEndpoint, nonce });

    const response = await fetch(tokenEndpoint, { method: 'POST', headers, body: form });
    const body = await response.json();
    if (response.ok) {
      const out = {
        access_token: body.access_token,
        token_type: body.token_type,
        expires_in: body.expires_in,
        scope: body.scope,
      };
      if (key) {
        out.jkt = key.jkt;
        out.key_id = key.keyId;
      }
      return out;
    }
    // RFC 9449 section 8: the server asks for a nonce; retry once with the one it gave.
    if (key && body.error === 'use_dpop_nonce' && response.headers.get('dpop-nonce') && !nonce) {
      nonce = response.headers.get('dpop-nonce');
      continue;
    }
    throw new Error(`token endpoint answered ${response.status}: ${JSON.stringify(body)}`);
  }
  throw new Error('token endpoint kept asking for a DPoP nonce');
}

async function revoke({ token }) {
  const response = await fetch(`${issuer}/token/revocation`, {
    method: 'POST',
    headers: {
      authorization: basic(TOKEN_CLIENT),
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token }),
  });
  if (!response.ok) {
    throw new Error(`revocation endpoint answered ${response.status}: ${await response.text()}`);
  }
  return {};
}

// --- The helper server --------------------------------------------------------------------

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

const routes = {
  'POST /token': requestToken,
  'POST /key': async () => {
    const key = await newKey();
    return { key_id: key.keyId, jkt: key.jkt };
  },
  'POST /proof': async (body) => {
    const key = keys.get(body.key_id);
    if (!key) throw new Error(`unknown key_id ${body.key_id}`);
    return { proof: await makeProof(key, body) };
  },
  'POST /revoke': revoke,
  'GET /stats': async () => ({ ...stats }),
  'POST /pause': async ({ ms }) => {
    introspectionDelayMs = Math.max(0, Number(ms) || 0);
    return {};
  },
  'POST /fail': async ({ status }) => {
    introspectionFailStatus = Math.max(0, Number(status) || 0);
    return {};
  },
};

const helperServer = http.createServer(async (req, res) => {
  const route = routes[`${req.method} ${new URL(req.url, 'http://helper').pathname}`];
  let status = 200;
  let body;
  if (!route) {
    status = 404;
    body = { error: `no route ${req.method} ${req.url}` };
  } else {
    try {
      body = await route(await readJson(req));
    } catch (err) {
      status = 500;
      body = { error: String(err?.message ?? err) };
    }
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
});
const helperPort = await listen(helperServer, portFrom(arg('--helper-port', 'IDP_HELPER_PORT')));

// --- Lifetime -----------------------------------------------------------------------------

function shutdown() {
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();

process.stdout.write(`READY ${idpPort} ${helperPort}\n`);
