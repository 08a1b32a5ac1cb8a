/**
 * A lifecycle event, for audit logs. It names the session by a short keyed hash of its store key
 * (stable across the session's requests, useless to anyone without the keys), never by its ID.
 */
export interface SessionEvent {
  /**
   * `created` (first stored), `login` (a sign-in; one that creates its session also emits `created`,
   * first), `regenerated`, `renewed` (periodic ID rotation), `destroyed`
   * (logout, destroy), `revoked` (by handle, by user, or by the cap on sessions per user: see `reason`),
   * `expired` (idle or absolute timeout: see `reason`), `rejected` (a cookie that was malformed,
   * duplicated, unknown, tampered with or sealed with a retired key: see `reason`), `dropped` (a
   * request's changes to a session destroyed meanwhile were discarded).
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
  /**
   * Why, for `revoked`, `expired` and `rejected`: one word of a fixed set per type (see
   * {@link SessionEventReasons}), the same as the `reason` attribute of the `latchkey.session.events`
   * metric. For the others, absent.
   */
  readonly reason?: string
  /** For `revoked`: how many sessions the revocation ended (a sign-out everywhere may end none). */
  readonly ended?: number
}

/**
 * The reasons of each event type that has one. They are the words of `session.endedBecause` where
 * the end is one it tells (`revoked`, `signed-out-everywhere`, `idle-timeout`, `absolute-timeout`,
 * `key-retired`, `session-cap`: the sessions the cap on sessions per user ended), and
 * `malformed`, `unknown`, `tampered` for cookies that named no session one can open.
 */
export interface SessionEventReasons {
  /** `revoke(handle)`; `revokeUserSessions` ("sign out everywhere"); the cap (`maxSessionsPerUser`). */
  readonly revoked: 'revoked' | 'signed-out-everywhere' | 'session-cap'
  /** Which timeout had passed when a load found the session past it. */
  readonly expired: 'idle-timeout' | 'absolute-timeout'
  /** A cookie not of the session format; naming no stored session; whose record does not open; sealed with a key no longer configured. */
  readonly rejected: 'malformed' | 'unknown' | 'tampered' | 'key-retired'
}

/** Every reason of every event type: a small fixed set (each is a metric time series). */
export type SessionEventReason = SessionEventReasons[keyof SessionEventReasons]
