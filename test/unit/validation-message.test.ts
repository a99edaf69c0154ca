// What a request that fails its schema is told: the field and what it takes, in one sentence
// (TypeBox lists every branch of a union; `flotilla admin group create --scheduler bogus` printed
// "must be equal to constant" once per scheduler, then "must match a schema in anyOf").
import * as assert from 'uvu/assert';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import { describeValidation } from '../../runtime/manager/http/app.ts';
import { suite } from '../helpers/suite.ts';

const t = suite('validation messages');

const Body = Type.Object({
  scheduler: Type.Optional(Type.Union([Type.Literal('fifo'), Type.Literal('lifo'), Type.Literal('drf')])),
  retries: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
  name: Type.Optional(Type.String({ maxLength: 4 })),
});
const check = Compile(Body);
const say = (value: unknown) => describeValidation('body', [...check.Errors(value)]);

t('a union of literals says which values it takes', () => {
  assert.is(say({ scheduler: 'bogus' }), 'body/scheduler must be one of "fifo", "lifo", "drf"');
});

t('an optional (nullable) field reports its own constraint, not "must be null"', () => {
  assert.is(say({ retries: -3 }), 'body/retries must be >= 0');
});

t('a plain constraint keeps its message; only the first failing field is named', () => {
  assert.is(say({ name: 'too long', retries: -1 }), 'body/retries must be >= 0');
  assert.is(say({ name: 'too long' }), 'body/name must not have more than 4 characters');
});

t.run();
