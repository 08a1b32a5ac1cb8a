/**
 * Concurrent requests on one session, with a store that only has `get` and `set`: each request keeps
 * a snapshot of the data it loaded, and its save re-reads the store and writes the fresh record with
 * only this request's own changes applied (keys it set, changed or deleted), so two requests changing
 * different keys both keep their change. A record gone from the store (destroyed, or expired) is not
 * written back. What remains is the window between that re-read and the `set`: a write or a destroy by
 * another request landing inside it is overwritten, because an old-style store has no compare-and-set.
 */
import type { Session } from './session.js'
import type { SessionData } from './store.js'

/** The data of a session, key by key, as JSON (the cookie is not data). */
export type Snapshot = ReadonlyMap<string, string>

export function snapshotOf(session: object): Snapshot {
  const snapshot = new Map<string, string>()
  for (const [key, value] of Object.entries(session)) {
    if (key !== 'cookie') snapshot.set(key, JSON.stringify(value) ?? 'undefined')
  }
  return snapshot
}

/**
 * Brings into `session` what other requests wrote to `fresh` since `loaded` was taken, keeping every
 * key this request changed, added or deleted as this request has it.
 */
export function mergeInto(session: Session, loaded: Snapshot, fresh: SessionData): void {
  const mine = snapshotOf(session)
  const changed = (key: string): boolean => loaded.get(key) !== mine.get(key)
  for (const [key, value] of Object.entries(fresh)) {
    if (key !== 'cookie' && !changed(key) && isDataKey(session, key)) session[key] = value
  }
  for (const key of loaded.keys()) {
    if (!(key in fresh) && !changed(key)) delete session[key]
  }
}

/** False for the names of methods and hidden fields (`save`, `id`...): stored data never replaces them. */
function isDataKey(session: Session, key: string): boolean {
  return !(key in session) || Object.prototype.propertyIsEnumerable.call(session, key)
}

/** The data keys this request set, changed, added or deleted since `loaded` was taken. */
export function changedKeys(session: object, loaded: Snapshot): Set<string> {
  const mine = snapshotOf(session)
  const changed = new Set<string>()
  for (const [key, value] of mine) if (loaded.get(key) !== value) changed.add(key)
  for (const key of loaded.keys()) if (!mine.has(key)) changed.add(key)
  return changed
}

/**
 * {@link mergeInto} for a save that may be tried again (a compare-and-set that lost): `changed` is
 * taken once, before the first attempt ({@link changedKeys}), so that what one attempt brought in from
 * another request's write is never mistaken for this request's own change by the next.
 */
export function mergeChanged(
  session: Session,
  changed: ReadonlySet<string>,
  fresh: Readonly<Record<string, unknown>>,
): void {
  for (const [key, value] of Object.entries(fresh)) {
    if (key !== 'cookie' && !changed.has(key) && isDataKey(session, key)) session[key] = value
  }
  for (const key of Object.keys(session)) {
    if (key !== 'cookie' && !changed.has(key) && !Object.hasOwn(fresh, key)) delete session[key]
  }
}
