// Users and keypairs. HMAC signing needs the secret itself, so it cannot be a one-way hash:
// secrets are encrypted at rest with AES-256-GCM under a key from config (or one generated
// once and kept in etcd), and are never logged.
import { createCipheriv, createDecipheriv, createHash, randomBytes, randomUUID } from 'node:crypto';
import type { ConfigStore, Database } from '../stores/types.ts';

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

  /** Create a user with one keypair. Returns the secret (shown once). */
  async create(opts: { email: string; role?: 'superadmin' | 'admin' | 'user'; isAdmin?: boolean; accessKey?: string; secretKey?: string; resourcePolicy?: string; rateLimit?: number }): Promise<{ accessKey: string; secretKey: string; userId: string }> {
    const gen = generateKeypair();
    const accessKey = opts.accessKey ?? gen.accessKey;
    const secretKey = opts.secretKey ?? gen.secretKey;
    if (!ACCESS_KEY_PATTERN.test(accessKey)) throw new Error('an access key is "AK" and 18 capital letters or digits');
    if (secretKey.length < 16) throw new Error('a secret key has at least 16 characters');
    const userId = randomUUID();
    await this.db.tx(async (c) => {
      await c.query(`INSERT INTO users (id, email, role) VALUES ($1, $2, $3)`, [userId, opts.email, opts.role ?? 'user']);
      await c.query(
        `INSERT INTO keypairs (access_key, secret_key_enc, user_id, is_admin, resource_policy, rate_limit) VALUES ($1, $2, $3, $4, $5, $6)`,
        [accessKey, this.box.seal(secretKey), userId, opts.isAdmin ?? false, opts.resourcePolicy ?? 'default', opts.rateLimit ?? 10_000],
      );
    });
    this.invalidate(accessKey);
    return { accessKey, secretKey, userId };
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
