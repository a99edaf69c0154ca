// Settings and cluster config: defaults in one place, and a wrong or missing value fails at
// start with a message that names it.
import * as assert from 'uvu/assert';
import { CLUSTER_KEYS, defaultClusterConfig, parseClusterValue, validateClusterFile } from '../../config/cluster.ts';
import { loadProcessSettings, SETTINGS } from '../../config/settings.ts';
import { ConfigError } from '../../schema/errors.ts';
import { suite } from '../helpers/suite.ts';

const t = suite('config');

function configError(fn: () => unknown): ConfigError {
  try { fn(); } catch (e) { if (e instanceof ConfigError) return e; throw e; }
  throw new Error('expected a ConfigError');
}

t('every setting has a default and a meaning, applied when nothing is set', () => {
  for (const [key, s] of Object.entries(SETTINGS)) {
    assert.ok(s.env.startsWith('FLOTILLA_'), key);
    assert.ok(s.meaning.length > 10, `${key} has a meaning`);
  }
  const settings = loadProcessSettings({});
  assert.is(settings.managerPort, 8081);
  assert.equal(settings.managerUrls, ['http://127.0.0.1:8081']);
  assert.is(settings.databaseUrl, undefined);
  assert.equal(settings.etcdEndpoints, []);
  assert.is(settings.dataDir, './.flotilla');
});

t('a wrong setting fails with an error naming it', () => {
  assert.is(configError(() => loadProcessSettings({ FLOTILLA_MANAGER_PORT: 'eighty' })).setting, 'FLOTILLA_MANAGER_PORT');
  assert.is(configError(() => loadProcessSettings({ FLOTILLA_DATABASE_URL: 'mysql://x' })).setting, 'FLOTILLA_DATABASE_URL');
  assert.is(configError(() => loadProcessSettings({ FLOTILLA_ETCD_ENDPOINTS: 'http://a:2379,not a url' })).setting, 'FLOTILLA_ETCD_ENDPOINTS');
  assert.is(configError(() => loadProcessSettings({ FLOTILLA_LOG_LEVEL: 'loud' })).setting, 'FLOTILLA_LOG_LEVEL');
  assert.match(configError(() => loadProcessSettings({ FLOTILLA_CONFIG_FILE: '/no/such/file.json' })).message, /FLOTILLA_CONFIG_FILE/);
});

t('environment wins over the settings file', async () => {
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const dir = mkdtempSync('/tmp/flotilla-config-');
  writeFileSync(`${dir}/f.json`, JSON.stringify({ FLOTILLA_MANAGER_PORT: 9000, FLOTILLA_RESOURCE_GROUP: 'gpu' }));
  const s = loadProcessSettings({ FLOTILLA_CONFIG_FILE: `${dir}/f.json`, FLOTILLA_MANAGER_PORT: '9100' });
  assert.is(s.managerPort, 9100);
  assert.is(s.resourceGroup, 'gpu');
});

t('the cluster config has a default and meaning for every key; a file is validated key by key', () => {
  const defaults = defaultClusterConfig();
  for (const [k, spec] of Object.entries(CLUSTER_KEYS)) {
    assert.ok(spec.meaning.length > 10, `${k} has a meaning`);
    assert.equal((defaults as Record<string, unknown>)[k], spec.default);
  }
  assert.is(defaults['heartbeat.interval'], 1000);
  assert.is(defaults['heartbeat.timeout'], 3000);
  assert.equal(validateClusterFile({ 'heartbeat.timeout': 5000, 'vfolder.root': '/data' }), { 'heartbeat.timeout': 5000, 'vfolder.root': '/data' });
  assert.is(configError(() => validateClusterFile({ 'heartbeat.timeuot': 5 })).setting, 'heartbeat.timeuot');
  assert.is(configError(() => validateClusterFile({ 'heartbeat.timeout': -1 })).setting, 'heartbeat.timeout');
  assert.is(configError(() => validateClusterFile([])).setting, '<file>');
  assert.equal(parseClusterValue('images.aliases', '{"py":"x:1"}'), { py: 'x:1' });
});

t.run();
