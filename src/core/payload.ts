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

/** The plaintext of a payload: `{"d": data, "m": meta}`. */
export function serializePayload(data: ReadonlyMap<string, unknown>, meta: SessionMeta): string {
  return JSON.stringify({ d: Object.fromEntries(data), m: meta })
}
