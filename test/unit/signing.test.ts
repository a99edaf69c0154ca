import { createHash, createHmac } from 'node:crypto';
import * as assert from 'uvu/assert';
import { suite } from '../helpers/suite.ts';
import { API_VERSION, parseAuthorization, parseRequestDate, signRequest, verifySignature } from '../../schema/signing.ts';

const test = suite('signing', { timeoutMs: 5_000 });

// The API.md test vector.
const VECTOR = {
  method: 'POST', pathWithQuery: '/session', date: '2022-03-15T12:00:00+00:00', host: '127.0.0.1:18080',
  contentType: 'application/json', version: 'v6.20220315', accessKey: 'AKIAIOSFODNN7EXAMPLE',
  secretKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
};
const VECTOR_SIG = '657fe288a0547afe76c714b25092fb01e27cde79e2bce4e43f4d1e57a960175c';

test('API.md test vector', () => {
  assert.is(API_VERSION, 'v6.20220315');
  const { authorization, signature } = signRequest(VECTOR);
  assert.is(signature, VECTOR_SIG);
  assert.is(authorization, `BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:${VECTOR_SIG}`);
  assert.ok(verifySignature({ ...VECTOR, signature: VECTOR_SIG }));
  assert.ok(verifySignature({ ...VECTOR, signature: VECTOR_SIG.toUpperCase() }), 'hex case is free');
});

test('content type: lowercased, parameters dropped, octet-stream when absent', () => {
  assert.is(signRequest({ ...VECTOR, contentType: 'Application/JSON; charset=utf-8' }).signature, VECTOR_SIG);
  const none = signRequest({ ...VECTOR, contentType: undefined }).signature;
  assert.is.not(none, VECTOR_SIG);
  assert.is(signRequest({ ...VECTOR, contentType: 'application/octet-stream' }).signature, none);
  assert.is(signRequest({ ...VECTOR, contentType: '' }).signature, none);
});

test('method case does not matter; the day key is the UTC day of the Date', () => {
  assert.is(signRequest({ ...VECTOR, method: 'post' }).signature, VECTOR_SIG);
  // Local day the 16th, UTC day the 15th: an independent recomputation with key "20220315" must agree.
  const late = { ...VECTOR, date: '2022-03-16T01:00:00+09:00' };
  const h = (k: string | Buffer, m: string) => createHmac('sha256', k).update(m).digest();
  const toSign = ['POST', '/session', late.date, 'host:127.0.0.1:18080', 'content-type:application/json',
    'x-backendai-version:v6.20220315', createHash('sha256').digest('hex')].join('\n');
  const expected = createHmac('sha256', h(h(VECTOR.secretKey, '20220315'), VECTOR.host)).update(toSign).digest('hex');
  assert.is(signRequest(late).signature, expected);
  assert.throws(() => signRequest({ ...VECTOR, date: 'yesterday' }), RangeError);
});

test('any change is rejected', () => {
  const ok = { ...VECTOR, signature: VECTOR_SIG };
  assert.not.ok(verifySignature({ ...ok, secretKey: VECTOR.secretKey.slice(0, -1) + 'X' }), 'wrong secret');
  assert.not.ok(verifySignature({ ...ok, signature: VECTOR_SIG.slice(0, -1) + 'd' }), 'one hex digit changed');
  assert.not.ok(verifySignature({ ...ok, signature: VECTOR_SIG.slice(0, -1) }), 'shorter signature');
  assert.not.ok(verifySignature({ ...ok, signature: '' }), 'empty signature');
  assert.not.ok(verifySignature({ ...ok, pathWithQuery: '/session?x=1' }), 'path');
  assert.not.ok(verifySignature({ ...ok, host: '127.0.0.1:18081' }), 'host');
  assert.not.ok(verifySignature({ ...ok, method: 'GET' }), 'method');
  assert.not.ok(verifySignature({ ...ok, version: 'v6.20220316' }), 'version');
  assert.not.ok(verifySignature({ ...ok, contentType: 'text/plain' }), 'content type');
  assert.not.ok(verifySignature({ ...ok, date: '2022-03-15T12:00:01+00:00' }), 'date string');
  assert.not.ok(verifySignature({ ...ok, date: 'not a date' }), 'unparseable date');
});

test('parseRequestDate: ISO 8601', () => {
  const iso = (s: string) => parseRequestDate(s)?.toISOString();
  assert.is(iso('2022-03-15T12:00:00.123456+00:00'), '2022-03-15T12:00:00.123Z');
  assert.is(iso('2022-03-15T12:00:00+00:00'), '2022-03-15T12:00:00.000Z');
  assert.is(iso('2022-03-15T12:00:00Z'), '2022-03-15T12:00:00.000Z');
  assert.is(iso('2022-03-15T12:00:00.5Z'), '2022-03-15T12:00:00.500Z');
  assert.is(iso('2022-03-15T12:00:00'), '2022-03-15T12:00:00.000Z', 'no offset = UTC');
  assert.is(iso('2022-03-15T21:30:00.999999+09:30'), '2022-03-15T12:00:00.999Z');
  assert.is(iso('2022-03-15T07:00:00-0500'), '2022-03-15T12:00:00.000Z');
  assert.is(iso('2022-03-15 12:00:00+00:00'), '2022-03-15T12:00:00.000Z');
  assert.is(iso('2024-02-29T00:00:00Z'), '2024-02-29T00:00:00.000Z');
  for (const bad of ['2022-02-30T12:00:00Z', '2022-13-01T00:00:00Z', '2022-03-15T24:00:00Z', '2022-03-15T12:60:00Z',
    '2022-03-15T12:00:00+25:00', '2022-03-15', '2022-03-15T12:00Z', '2022-03-15T12:00:00.Z', 'x2022-03-15T12:00:00Z', '', '   ']) {
    assert.is(parseRequestDate(bad), undefined, bad);
  }
  assert.is(parseRequestDate(undefined), undefined);
});

test('parseRequestDate: RFC 7231 HTTP dates', () => {
  const iso = (s: string) => parseRequestDate(s)?.toISOString();
  assert.is(iso('Tue, 15 Mar 2022 12:00:00 GMT'), '2022-03-15T12:00:00.000Z');
  assert.is(iso(new Date('2022-03-15T12:00:00Z').toUTCString()), '2022-03-15T12:00:00.000Z');
  assert.is(iso('Sunday, 06-Nov-94 08:49:37 GMT'), '1994-11-06T08:49:37.000Z');
  assert.is(iso('Sun Nov  6 08:49:37 1994'), '1994-11-06T08:49:37.000Z');
  assert.is(iso('Sun Nov 16 08:49:37 1994'), '1994-11-16T08:49:37.000Z');
  for (const bad of ['Tue, 15 Xyz 2022 12:00:00 GMT', 'Tue, 31 Apr 2022 12:00:00 GMT', 'Tue, 15 Mar 2022 12:00:00 UTC',
    'Tue, 15 Mar 2022 12:00:00 +0000', 'Tue 15 Mar 2022 12:00:00 GMT']) {
    assert.is(parseRequestDate(bad), undefined, bad);
  }
});

test('parseAuthorization', () => {
  const want = { accessKey: 'AKIAIOSFODNN7EXAMPLE', signature: VECTOR_SIG };
  assert.equal(parseAuthorization(signRequest(VECTOR).authorization), want);
  assert.equal(parseAuthorization(`BackendAI signMethod=HMAC-SHA256,credential=AKIAIOSFODNN7EXAMPLE:${VECTOR_SIG}`), want);
  assert.equal(parseAuthorization(`  BackendAI   signMethod = HMAC-SHA256 ,  credential= AKIAIOSFODNN7EXAMPLE:${VECTOR_SIG}  `), want);
  assert.equal(parseAuthorization(`BackendAI credential=AKIAIOSFODNN7EXAMPLE:${VECTOR_SIG}, signMethod=hmac-sha256`), want);
  assert.equal(parseAuthorization(`BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:${VECTOR_SIG.toUpperCase()}`), want, 'signature lowercased');
  for (const bad of [
    undefined, '', 'BackendAI', `Bearer signMethod=HMAC-SHA256, credential=AK:${VECTOR_SIG}`,
    `BackendAI signMethod=HMAC-SHA1, credential=AK:${VECTOR_SIG}`,
    `BackendAI signMethod=SHA256, credential=AK:${VECTOR_SIG}`,
    `BackendAI credential=AK:${VECTOR_SIG}`,
    'BackendAI signMethod=HMAC-SHA256',
    `BackendAI signMethod=HMAC-SHA256, credential=AK${VECTOR_SIG}`,
    `BackendAI signMethod=HMAC-SHA256, credential=:${VECTOR_SIG}`,
    `BackendAI signMethod=HMAC-SHA256, credential=AK:${VECTOR_SIG.slice(1)}`,
    `BackendAI signMethod=HMAC-SHA256, credential=AK:${VECTOR_SIG.slice(1)}g`,
    `BackendAI signMethod=HMAC-SHA256, credential=A K:${VECTOR_SIG}`,
    `BackendAI signMethod=HMAC-SHA256, signMethod=HMAC-SHA256, credential=AK:${VECTOR_SIG}`,
    `BackendAI signMethod=HMAC-SHA256, junk, credential=AK:${VECTOR_SIG}`,
  ]) {
    assert.is(parseAuthorization(bad), undefined, String(bad));
  }
});

test.run();
