/**
 * The plaintext inside a sealed payload: the session's data and the small metadata the core keeps
 * beside it, as JSON (never a format that can instantiate objects).
 */
import type { SessionMeta } from './session.js'

/** A payload opened and parsed: the data and the metadata. */
export interface PayloadContents {
  readonly data: Map<string, unknown>
  readonly meta: SessionMeta
}

/**
 * The payload of a record whose session was ended (logout, revoke, expiry, the old ID of a login).
 * Written by compare-and-set before the store's own tombstone, so the end wins every race; it opens to
 * nothing, and the core reads it as "no session".
 */
export const ENDED_PAYLOAD = ''

/** Parses a payload's plaintext; `null` for anything that is not what {@link serializePayload} wrote. */
export function parsePayload(text: string): PayloadContents | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return null
  }
  if (!parsed || typeof parsed !== 'object') return null
  const { d, m } = parsed as { d?: unknown; m?: unknown }
  if (!d || typeof d !== 'object' || Array.isArray(d) || !m || typeof m !== 'object') return null
  const meta = m as Partial<SessionMeta>
  if (typeof meta.csrf !== 'string' || typeof meta.iat !== 'number' || typeof meta.lid !== 'string')
    return null
  if (meta.ua !== undefined && typeof meta.ua !== 'string') return null
  if (meta.next !== undefined && typeof meta.next !== 'string') return null
  if (meta.retired !== undefined && (meta.retired !== true || meta.next === undefined)) return null
  return { data: new Map(Object.entries(d)), meta: meta as SessionMeta }
}

/**
 * A payload's contents kept for reuse, when reusing them cannot leak one request's changes into
 * another's: every value is a string, a finite number, a boolean or `null` (immutable, and unchanged by
 * a JSON round trip). Each request gets its own copies: `new Map(entries)` and `{ ...meta }`.
 */
export interface SharedContents {
  readonly entries: readonly (readonly [string, unknown])[]
  readonly meta: Readonly<SessionMeta>
}

/** A value that survives JSON unchanged and cannot be changed in place. */
function isPlainScalar(value: unknown): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value) && !Object.is(value, -0)
    default:
      return value === null
  }
}

/** The contents as {@link SharedContents}, or `null` when a value is an object (or would not round-trip). */
export function shareable(data: ReadonlyMap<string, unknown>, meta: SessionMeta): SharedContents | null {
  for (const value of data.values()) if (!isPlainScalar(value)) return null
  return { entries: [...data], meta: { ...meta } }
}

/** Copies of shared contents for one request. */
export function unshare(shared: SharedContents): PayloadContents {
  return { data: new Map(shared.entries), meta: { ...shared.meta } }
}

/** Metadata as last serialized, and its JSON: it rarely changes between one write of a session and the next. */
export interface MetaJson {
  readonly meta: Readonly<SessionMeta>
  readonly json: string
}

function sameMeta(a: Readonly<SessionMeta>, b: Readonly<SessionMeta>): boolean {
  return (
    a.csrf === b.csrf &&
    a.iat === b.iat &&
    a.lid === b.lid &&
    a.ua === b.ua &&
    a.next === b.next &&
    a.retired === b.retired
  )
}

/** The JSON of `meta`, reusing `last` when every field is unchanged. */
export function metaJson(meta: SessionMeta, last: MetaJson | undefined): MetaJson {
  if (last !== undefined && sameMeta(last.meta, meta)) return last
  return { meta: { ...meta }, json: JSON.stringify(meta) }
}

/** The plaintext of a payload: `{"d": data, "m": meta}`, with the metadata already as JSON. */
export function serializePayload(data: ReadonlyMap<string, unknown>, meta: MetaJson | SessionMeta): string {
  const json = 'json' in meta ? meta.json : JSON.stringify(meta)
  return `{"d":${JSON.stringify(Object.fromEntries(data))},"m":${json}}`
}
