// Users and keypairs. HMAC signing needs the secret itself, so it cannot be a one-way hash:
// secrets are encrypted at rest with AES-256-GCM under a key from config (or one generated
// once and kept in etcd), and are never logged.
import { createCipheriv, createDecipheriv, createHash, randomBytes, randomUUID } from 'node:crypto';
import { Conflict, InvalidAPIParameters, NotFound } from '../../schema/errors.ts';
import type { ConfigStore, Database, DbClient, LivenessStore } from '../stores/types.ts';

const KEYPAIR_CHANNEL = 'flotilla:keypair-changed';

/** A keypair as admins list it: never its secret. */
export interface KeypairInfo {
  access_key: string; user_id: string; email: string; role: string; is_admin: boolean; is_active: boolean;
  resource_policy: string; rate_limit: number; created_at: Date; last_used: Date | null;
}
const INFO_SELECT = `SELECT k.access_key, k.user_id, u.email, u.role, k.is_admin, k.is_active, k.resource_policy, k.rate_limit, k.created_at, k.last_used
  FROM keypairs k JOIN users u ON u.id = k.user_id`;

const KEY_PATH = 'flotilla/secrets/keypair-encryption-key';
const AK_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const SK_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function randomFrom(chars: string, n: number): string {
  const bytes = randomBytes(n);
  return Array.from(bytes, (b) => chars[b % chars.length]).join('');
}

/** Backend.AI's shapes: 20-char access key starting with AK, 40-char secret key. */
export function generateKeypair(): { accessKey: string; secretKey: string } {
  return { accessKey: `AK${randomFrom(AK_CHARS, 18)}`, secretKey: randomFrom(SK_CHARS, 40) };
}

export const ACCESS_KEY_PATTERN = /^AK[A-Z0-9]{18}$/;

export class SecretBox {
  constructor(private readonly key: Buffer) {}

  /** The key from FLOTILLA_SECRET_ENCRYPTION_KEY, or the cluster's generated one in etcd (created once). */
  static async open(config: ConfigStore, explicit?: string): Promise<SecretBox> {
    if (explicit) return new SecretBox(createHash('sha256').update(explicit).digest());
    let stored = await config.get(KEY_PATH);
    if (!stored) {
      await config.put(KEY_PATH, randomBytes(32).toString('base64'));
      stored = await config.get(KEY_PATH);
    }
    return new SecretBox(Buffer.from(stored!, 'base64'));
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return `v1:${iv.toString('base64')}:${c.getAuthTag().toString('base64')}:${body.toString('base64')}`;
  }

  open(sealed: string): string {
    const [v, iv, tag, body] = sealed.split(':');
    if (v !== 'v1' || !iv || !tag || body === undefined) throw new Error('unreadable sealed secret');
    const d = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64'));
    d.setAuthTag(Buffer.from(tag, 'base64'));
    return Buffer.concat([d.update(Buffer.from(body, 'base64')), d.final()]).toString('utf8');
  }
}

export interface Keypair { accessKey: string; secretKey: string; userId: string; isAdmin: boolean; isActive: boolean; resourcePolicy: string; rateLimit: number }

export class Keypairs {
  /** Decrypted keypairs by access key, so a signed request costs no query (invalidated on change). */
  private cache = new Map<string, { kp: Keypair | undefined; at: number }>();

  constructor(private readonly db: Database, private readonly box: SecretBox, private readonly cacheMs = 5_000) {}

  async get(accessKey: string): Promise<Keypair | undefined> {
    const hit = this.cache.get(accessKey);
    if (hit && Date.now() - hit.at < this.cacheMs) return hit.kp;
    const r = (await this.db.query<{ access_key: string; secret_key_enc: string; user_id: string; is_admin: boolean; is_active: boolean; resource_policy: string; rate_limit: number; user_status: string }>(
      `SELECT k.access_key, k.secret_key_enc, k.user_id, k.is_admin, k.is_active, k.resource_policy, k.rate_limit, u.status AS user_status
       FROM keypairs k JOIN users u ON u.id = k.user_id WHERE k.access_key = $1`, [accessKey])).rows[0];
    const kp = r && {
      accessKey: r.access_key, secretKey: this.box.open(r.secret_key_enc), userId: r.user_id, isAdmin: r.is_admin,
      isActive: r.is_active && r.user_status === 'active', resourcePolicy: r.resource_policy, rateLimit: r.rate_limit,
    };
    this.cache.set(accessKey, { kp, at: Date.now() });
    return kp;
  }

  invalidate(accessKey?: string): void { if (accessKey) this.cache.delete(accessKey); else this.cache.clear(); }

  /**
   * Create a keypair for the user with this email (the user too, when new). Returns the secret:
   * the only time it leaves the manager.
   */
  async create(opts: { email: string; role?: 'superadmin' | 'admin' | 'user'; isAdmin?: boolean; accessKey?: string; secretKey?: string; resourcePolicy?: string; rateLimit?: number }): Promise<{ accessKey: string; secretKey: string; userId: string }> {
    const gen = generateKeypair();
    const accessKey = opts.accessKey ?? gen.accessKey;
    const secretKey = opts.secretKey ?? gen.secretKey;
    if (!ACCESS_KEY_PATTERN.test(accessKey)) throw new InvalidAPIParameters('an access key is "AK" and 18 capital letters or digits');
    if (secretKey.length < 16) throw new InvalidAPIParameters('a secret key has at least 16 characters');
    const policy = opts.resourcePolicy ?? 'default';
    const userId = await this.db.tx(async (c) => {
      if (!(await c.query(`SELECT 1 FROM resource_policies WHERE name = $1`, [policy])).rowCount) throw new InvalidAPIParameters(`unknown resource policy ${JSON.stringify(policy)}`);
      // One user per email whatever its case (ALICE@ is alice@): a keypair made with another
      // spelling joins the existing user instead of becoming a second one.
      const existing = (await c.query<{ id: string }>(
        `SELECT id FROM users WHERE lower(email) = lower($1) ORDER BY (email = $1) DESC, created_at LIMIT 1`, [opts.email])).rows[0]?.id;
      const id = existing ?? (await c.query<{ id: string }>(
        `INSERT INTO users (id, email, role) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id`,
        [randomUUID(), opts.email, opts.role ?? (opts.isAdmin ? 'admin' : 'user')])).rows[0].id;
      await c.query(
        `INSERT INTO keypairs (access_key, secret_key_enc, user_id, is_admin, resource_policy, rate_limit) VALUES ($1, $2, $3, $4, $5, $6)`,
        [accessKey, this.box.seal(secretKey), id, opts.isAdmin ?? false, policy, opts.rateLimit ?? 10_000],
      );
      return id;
    });
    this.invalidate(accessKey);
    return { accessKey, secretKey, userId };
  }

  /** Every keypair, without secrets. */
  async list(): Promise<KeypairInfo[]> {
    return (await this.db.query<KeypairInfo>(`${INFO_SELECT} ORDER BY k.created_at, k.access_key`)).rows;
  }

  async info(accessKey: string): Promise<KeypairInfo> {
    const r = (await this.db.query<KeypairInfo>(`${INFO_SELECT} WHERE k.access_key = $1`, [accessKey])).rows[0];
    if (!r) throw new NotFound(`no keypair ${accessKey}`);
    return r;
  }

  /** Change a keypair; deactivating takes effect on its next request (every manager drops its cached copy). */
  async update(accessKey: string, change: { isActive?: boolean; isAdmin?: boolean; resourcePolicy?: string; rateLimit?: number }): Promise<KeypairInfo> {
    const sets: string[] = [];
    const params: unknown[] = [accessKey];
    const set = (col: string, v: unknown) => { if (v !== undefined) { params.push(v); sets.push(`${col} = $${params.length}`); } };
    set('is_active', change.isActive);
    set('is_admin', change.isAdmin);
    set('resource_policy', change.resourcePolicy);
    set('rate_limit', change.rateLimit);
    if (sets.length) {
      try {
        await this.db.tx(async (c) => {
          // Deactivating or demoting the last active admin would lock everyone out of /admin for good.
          if (change.isActive === false || change.isAdmin === false) await this.keepAnAdmin(c, accessKey, 'deactivated or demoted');
          const r = await c.query(`UPDATE keypairs SET ${sets.join(', ')} WHERE access_key = $1`, params);
          if (!r.rowCount) throw new NotFound(`no keypair ${accessKey}`);
        });
      } catch (e) {
        if ((e as { code?: string }).code === '23503') throw new InvalidAPIParameters(`unknown resource policy ${JSON.stringify(change.resourcePolicy)}`);
        throw e;
      }
      await this.changed(accessKey);
    }
    return this.info(accessKey);
  }

  /**
   * Delete a keypair: refused while it has live sessions; its ended sessions' rows go with it
   * (their events stay, as the retention of events is configured apart).
   */
  async delete(accessKey: string): Promise<void> {
    await this.db.tx(async (c) => {
      const kp = await c.query(`SELECT 1 FROM keypairs WHERE access_key = $1 FOR UPDATE`, [accessKey]);
      if (!kp.rowCount) throw new NotFound(`no keypair ${accessKey}`);
      const live = await c.query(`SELECT count(*) AS n FROM sessions WHERE access_key = $1 AND status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED')`, [accessKey]);
      if (Number(live.rows[0].n)) throw new Conflict(`keypair ${accessKey} has ${live.rows[0].n} live sessions; destroy them first`);
      await this.keepAnAdmin(c, accessKey, 'deleted');
      // Its folders' rows would go with it (ON DELETE CASCADE) and leave their data on disk with no owner to purge it.
      const folders = await c.query(`SELECT count(*) AS n FROM vfolders WHERE owner_access_key = $1 AND status <> 'deleted'`, [accessKey]);
      if (Number(folders.rows[0].n)) throw new Conflict(`keypair ${accessKey} owns ${folders.rows[0].n} virtual folders; delete and purge them first`);
      await c.query(`DELETE FROM sessions WHERE access_key = $1`, [accessKey]);
      await c.query(`DELETE FROM keypairs WHERE access_key = $1`, [accessKey]);
    });
    await this.changed(accessKey);
  }

  /**
   * Refuses (409) to take away the last active admin keypair. The active admins' rows are locked
   * first, so two admins removing each other at once cannot both pass.
   */
  private async keepAnAdmin(c: DbClient, accessKey: string, what: string): Promise<void> {
    const admins = (await c.query<{ access_key: string }>(`SELECT access_key FROM keypairs WHERE is_admin AND is_active ORDER BY access_key FOR UPDATE`)).rows;
    if (admins.length === 1 && admins[0].access_key === accessKey) throw new Conflict(`the last active admin keypair cannot be ${what}`);
  }

  /** Drop cached copies here and, through Redis pub/sub, in every other manager. */
  private async changed(accessKey: string): Promise<void> {
    this.invalidate(accessKey);
    await this.bus?.publish(KEYPAIR_CHANNEL, accessKey).catch(() => undefined);
  }

  private bus?: LivenessStore;
  /** Listen for other managers' keypair changes (Redis pub/sub); returns the stop function. */
  async follow(bus: LivenessStore): Promise<() => Promise<void>> {
    this.bus = bus;
    return bus.subscribe(KEYPAIR_CHANNEL, (ak) => this.invalidate(ak));
  }

  /**
   * The first start creates the admin keypair: exactly the given keys when set (DESIGN.md §10),
   * otherwise generated. Returns the keys only when it created them (to print once).
   */
  async bootstrapAdmin(given: { accessKey?: string; secretKey?: string }): Promise<{ accessKey: string; secretKey: string } | undefined> {
    const existing = await this.db.query(`SELECT 1 FROM keypairs WHERE is_admin LIMIT 1`);
    if (existing.rowCount) return undefined;
    if (!!given.accessKey !== !!given.secretKey) throw new Error('FLOTILLA_ADMIN_ACCESS_KEY and FLOTILLA_ADMIN_SECRET_KEY are set together or not at all');
    const kp = await this.create({ email: 'admin@flotilla.local', role: 'superadmin', isAdmin: true, accessKey: given.accessKey, secretKey: given.secretKey });
    return { accessKey: kp.accessKey, secretKey: kp.secretKey };
  }
}
