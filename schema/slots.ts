// Resource slots: named decimal amounts (`cpu` cores, `mem` bytes, accelerators such as
// `cuda.device`). Amounts are kept as decimal strings and computed in fixed point (BigInt
// millionths), so adding and subtracting never drifts the way floats do.
export type ResourceSlots = Record<string, string>;

const SCALE = 1_000_000n;
const SLOT_NAME = /^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$/;
const UNITS: Record<string, bigint> = { '': 1n, k: 1024n, m: 1024n ** 2n, g: 1024n ** 3n, t: 1024n ** 4n, p: 1024n ** 5n };

/** Decimal string (or number) → millionths. Throws on anything else. */
function toMicro(value: string): bigint {
  const m = /^(\d+)(?:\.(\d{1,6}))?$/.exec(value);
  if (!m) throw new Error(`not a non-negative decimal with at most 6 decimal places: ${JSON.stringify(value)}`);
  return BigInt(m[1]) * SCALE + BigInt((m[2] ?? '').padEnd(6, '0'));
}

function fromMicro(v: bigint): string {
  const whole = v / SCALE;
  const frac = (v % SCALE).toString().padStart(6, '0').replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : `${whole}`;
}

/** One requested amount: `mem` takes binary units (`"2g"`, `"512m"`, bytes), others are decimals. */
export function parseSlotAmount(slot: string, raw: unknown): string {
  if (!SLOT_NAME.test(slot)) throw new Error(`unknown resource slot name ${JSON.stringify(slot)}`);
  const text = typeof raw === 'number' ? (Number.isFinite(raw) ? String(raw) : '') : typeof raw === 'string' ? raw.trim().toLowerCase() : '';
  if (slot === 'mem') {
    const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$/.exec(text);
    if (!m) throw new Error(`mem: expected bytes or a size like "2g", got ${JSON.stringify(raw)}`);
    const [whole, frac = ''] = m[1].split('.');
    const unit = UNITS[m[2]];
    const scaled = BigInt(whole) * unit + (frac ? (BigInt(frac) * unit) / 10n ** BigInt(frac.length) : 0n);
    return scaled.toString();
  }
  try { return fromMicro(toMicro(text)); } catch (e) { throw new Error(`${slot}: ${(e as Error).message}`); }
}

/** Parse a whole request or declaration, e.g. `{cpu: 2, mem: "4g"}` or `"cpu=4,mem=8g"`. */
export function parseSlots(input: Record<string, unknown> | string): ResourceSlots {
  const entries = typeof input === 'string'
    ? input.split(',').map((s) => s.trim()).filter(Boolean).map((pair) => {
      const i = pair.indexOf('=');
      if (i < 1) throw new Error(`expected name=amount, got ${JSON.stringify(pair)}`);
      return [pair.slice(0, i).trim(), pair.slice(i + 1).trim()] as const;
    })
    : Object.entries(input);
  const out: ResourceSlots = {};
  for (const [k, v] of entries) out[k] = parseSlotAmount(k, v);
  return out;
}

export function addSlots(a: ResourceSlots, b: ResourceSlots): ResourceSlots {
  const out: ResourceSlots = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = fromMicro(toMicro(out[k] ?? '0') + toMicro(v));
  return out;
}

export function subtractSlots(a: ResourceSlots, b: ResourceSlots): ResourceSlots {
  const out: ResourceSlots = { ...a };
  for (const [k, v] of Object.entries(b)) { const d = toMicro(out[k] ?? "0") - toMicro(v); out[k] = fromMicro(d < 0n ? 0n : d); }
  return out;
}

/** Does `request` fit in `free`? A slot the request names that `free` lacks does not fit (unless 0). */
export function fitsIn(request: ResourceSlots, free: ResourceSlots): boolean {
  return Object.entries(request).every(([k, v]) => toMicro(v) === 0n || (free[k] !== undefined && toMicro(v) <= toMicro(free[k])));
}

/** The slots that do not fit, for a PENDING reason. */
export function shortSlots(request: ResourceSlots, free: ResourceSlots): string[] {
  return Object.entries(request).filter(([k, v]) => !fitsIn({ [k]: v }, free)).map(([k]) => k);
}

export const slotNumber = (v: string | undefined): number => (v === undefined ? 0 : Number(v));

/**
 * An amount as an integer count of the slot's smallest unit: bytes for `mem`, millionths for
 * every other slot. Exact in a float64 below 2^53 (8 PiB of memory, 9·10⁹ cores), so the
 * scheduler compares and adds plain numbers in its hot loop without drifting.
 */
export function slotUnits(slot: string, amount: string | undefined): number {
  if (amount === undefined) return 0;
  return slot === 'mem' ? Number(amount) : Number(toMicro(amount));
}

/** The inverse of slotUnits. */
export function fromSlotUnits(slot: string, units: number): string {
  return slot === 'mem' ? String(units) : fromMicro(BigInt(units));
}
