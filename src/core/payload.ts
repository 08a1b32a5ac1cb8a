/**
 * The plaintext inside a sealed payload: the session's data and the small metadata the core keeps
 * beside it, as JSON (never a format that can instantiate objects).
 */
import type { Keyring } from './crypto.js'
import type { OpenedRecord } from './lifecycle/record-state.js'
import { ENDED_PAYLOAD } from './lifecycle/record-state.js'
import type { SessionMeta } from './session.js'
import type { SessionRecord } from './store.js'

/** A payload opened and parsed: the data and the metadata. */
export interface PayloadContents {
  readonly data: Map<string, unknown>
  readonly meta: SessionMeta
}

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
  if (meta.p !== undefined && typeof meta.p !== 'boolean') return null
  if (meta.at !== undefined && typeof meta.at !== 'number') return null
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
  // One pass: the entries the iterator hands out are fresh arrays, kept as they come.
  const entries: (readonly [string, unknown])[] = []
  for (const entry of data) {
    if (!isPlainScalar(entry[1])) return null
    entries.push(entry)
  }
  return { entries, meta: { ...meta } }
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
    a.retired === b.retired &&
    a.p === b.p &&
    a.at === b.at
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

/**
 * {@link serializePayload} of shared contents' entries, written pair by pair: the same text, without
 * the object `Object.fromEntries` would build. Exact because every value is a plain scalar (its JSON
 * is the same on its own as inside an object); a key that starts with a digit (an array index sorts
 * first in an object) takes the general path, so the text never differs.
 */
function serializeShared(entries: SharedContents['entries'], meta: MetaJson): string {
  let d = '{'
  for (let i = 0; i < entries.length; i++) {
    const [key, value] = entries[i] as readonly [string, unknown]
    const first = key.charCodeAt(0)
    if (first >= 48 && first <= 57) return serializePayload(new Map(entries), meta)
    d += `${i === 0 ? '' : ','}${JSON.stringify(key)}:${JSON.stringify(value)}`
  }
  return `{"d":${d}},"m":${meta.json}}`
}

/** Opens and seals the payloads of records: the keyring alone ({@link PayloadCodec}) or with a cache in front ({@link PayloadCache}). */
export interface Payloads {
  /**
   * Opens a record's payload; `null` when it is ended or does not open (tampered, unknown key). `id`
   * is the session ID the record was read under, when known (a cache may use it).
   */
  open(record: SessionRecord, id: string | null): OpenedRecord | null
  /** Seals a session's data and metadata for the record under `key`; `id` as for {@link open}. */
  seal(id: string | null, data: ReadonlyMap<string, unknown>, meta: SessionMeta, key: string): string
  /** Seals a pointer (a forwarder or a retired record): metadata, no data. Never cached. */
  sealPointer(meta: SessionMeta, key: string): string
}

/** Payloads sealed by the keyring, with the store key as associated data: a payload moved to another key opens nothing. */
export class PayloadCodec implements Payloads {
  constructor(readonly keyring: Keyring) {}

  open(record: SessionRecord): OpenedRecord | null {
    const opened = this.openText(record)
    const contents = opened && parsePayload(opened.plaintext)
    return contents ? { record, data: contents.data, meta: contents.meta, stale: opened.stale } : null
  }

  /** The plaintext of a record's payload and whether a retired key sealed it; `null` when it does not open. */
  openText(record: SessionRecord): { plaintext: string; stale: boolean } | null {
    if (record.payload === ENDED_PAYLOAD) return null
    return this.keyring.open(record.payload, record.key)
  }

  seal(_id: string | null, data: ReadonlyMap<string, unknown>, meta: SessionMeta, key: string): string {
    return this.keyring.seal(serializePayload(data, meta), key)
  }

  sealPointer(meta: SessionMeta, key: string): string {
    return this.keyring.seal(serializePayload(new Map(), meta), key)
  }
}

/** Sessions a process keeps opened payloads for: enough for those active at once. */
export const RECENT_SESSIONS = 4096

/** Sets `key` in an insertion-ordered map kept to {@link RECENT_SESSIONS} entries, dropping the oldest. */
export function keepRecent<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > RECENT_SESSIONS) map.delete(map.keys().next().value as string)
}

/** What a process remembers of a session's payload, by ID. */
interface Remembered {
  readonly key: string
  /** The sealed payload this entry describes; any other payload under the key is opened afresh. */
  readonly payload: string
  readonly plaintext: string
  readonly stale: boolean
  /** The parsed contents, when they can be handed to every request as copies. */
  shared: SharedContents | null | undefined
  /** The metadata's JSON, for the next write. */
  meta: MetaJson | undefined
}

/**
 * {@link PayloadCodec} with a memory of the last payload of each recently used session ID, so the next
 * request on the session skips the decryption while the stored payload is still the same string. The
 * store stays the authority: every request still reads the record, and only an identical payload is
 * served from here. No request can see another's in-place changes: the plaintext is parsed afresh for
 * each request, except when every value is an immutable scalar (string, finite number, boolean, null),
 * where each request gets its own copy of the parsed contents.
 */
export class PayloadCache implements Payloads {
  private readonly recent = new Map<string, Remembered>()

  constructor(private readonly codec: PayloadCodec) {}

  /** The store key a session ID was last seen under, if remembered (it saves hashing the ID). */
  keyOf(id: string): string | undefined {
    return this.recent.get(id)?.key
  }

  open(record: SessionRecord, id: string | null): OpenedRecord | null {
    if (record.payload === ENDED_PAYLOAD) return null
    const cached = id === null ? undefined : this.recent.get(id)
    if (cached !== undefined && cached.payload === record.payload && cached.key === record.key) {
      if (cached.shared) {
        // Copies for this request, put straight into the result (a spread of an intermediate object
        // between other properties takes V8's slow path, on every read).
        const shared = cached.shared
        return { record, data: new Map(shared.entries), meta: { ...shared.meta }, stale: cached.stale }
      }
      const contents = parsePayload(cached.plaintext)
      if (!contents) return null
      if (cached.shared === undefined) cached.shared = shareable(contents.data, contents.meta)
      return { record, data: contents.data, meta: contents.meta, stale: cached.stale }
    }
    const opened = this.codec.openText(record)
    const contents = opened && parsePayload(opened.plaintext)
    if (!opened || !contents) {
      if (id !== null) this.recent.delete(id)
      return null
    }
    if (id !== null) {
      keepRecent(this.recent, id, {
        key: record.key,
        payload: record.payload,
        plaintext: opened.plaintext,
        stale: opened.stale,
        shared: undefined,
        meta: undefined,
      })
    }
    return { record, data: contents.data, meta: contents.meta, stale: opened.stale }
  }

  seal(id: string | null, data: ReadonlyMap<string, unknown>, meta: SessionMeta, key: string): string {
    if (id === null) return this.codec.seal(id, data, meta, key)
    const previous = this.recent.get(id)
    const json = metaJson(meta, previous?.key === key ? previous.meta : undefined)
    const shared = shareable(data, meta)
    const plaintext = shared === null ? serializePayload(data, json) : serializeShared(shared.entries, json)
    const payload = this.codec.keyring.seal(plaintext, key)
    keepRecent(this.recent, id, { key, payload, plaintext, stale: false, shared, meta: json })
    return payload
  }

  sealPointer(meta: SessionMeta, key: string): string {
    return this.codec.sealPointer(meta, key)
  }
}
