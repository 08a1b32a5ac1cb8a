/**
 * A lifecycle event, for audit logs. It names the session by a short keyed hash of its store key
 * (stable across the session's requests, useless to anyone without the keys), never by its ID.
 */
export interface SessionEvent {
  /**
   * `created` (first stored), `login`, `regenerated`, `renewed` (periodic ID rotation), `destroyed`
   * (logout, destroy), `revoked` (by handle or by user), `expired`, `rejected` (a cookie that was
   * malformed, duplicated, unknown or tampered with: see `reason`), `dropped` (a request's changes to a
   * session destroyed meanwhile were discarded).
   */
  readonly type:
    | 'created'
    | 'login'
    | 'regenerated'
    | 'renewed'
    | 'destroyed'
    | 'revoked'
    | 'expired'
    | 'rejected'
    | 'dropped'
  /** 12-character keyed hash of the session's store key, or `null` when there is none (malformed cookie). */
  readonly session: string | null
  /** The user, when known. */
  readonly userId: string | null
  /** Epoch ms, from the manager's clock. */
  readonly at: number
  /** For `rejected`: `malformed`, `unknown` or `tampered`. */
  readonly reason?: string
}
