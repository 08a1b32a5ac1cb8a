/**
 * express-session's MemoryStore: sessions as JSON in a Map of this process, an expired one dropped
 * when read. For tests and a single process in development: it forgets everything on restart and
 * grows with every session until each is read past its expiry.
 */
import type { Callback } from './session.js'
import { type GetCallback, type SessionData, Store } from './store.js'

export class MemoryStore extends Store {
  private readonly sessions = new Map<string, string>()

  override get(sid: string, callback: GetCallback): void {
    const session = this.read(sid)
    setImmediate(callback, null, session)
  }

  override set(sid: string, session: object, callback?: Callback): void {
    this.sessions.set(sid, JSON.stringify(session))
    if (callback) setImmediate(callback)
  }

  override destroy(sid: string, callback?: Callback): void {
    this.sessions.delete(sid)
    if (callback) setImmediate(callback)
  }

  /** Moves the stored cookie's expiry to the one of `session`, if the session is still there. */
  override touch(sid: string, session: SessionData, callback?: Callback): void {
    const stored = this.read(sid)
    if (stored) {
      stored.cookie = session.cookie
      this.sessions.set(sid, JSON.stringify(stored))
    }
    if (callback) setImmediate(callback)
  }

  /** Every live session, by ID. */
  all(callback: (error: unknown, sessions?: Record<string, SessionData>) => void): void {
    const sessions: Record<string, SessionData> = {}
    for (const sid of [...this.sessions.keys()]) {
      const session = this.read(sid)
      if (session) sessions[sid] = session
    }
    setImmediate(callback, null, sessions)
  }

  clear(callback?: Callback): void {
    this.sessions.clear()
    if (callback) setImmediate(callback)
  }

  length(callback: (error: unknown, length?: number) => void): void {
    this.all((error, sessions) => callback(error, sessions ? Object.keys(sessions).length : undefined))
  }

  /** The session `sid`, or undefined when missing or expired (an expired one is deleted). */
  private read(sid: string): SessionData | undefined {
    const json = this.sessions.get(sid)
    if (json === undefined) return undefined
    const session = JSON.parse(json) as SessionData
    const expires = (session.cookie as { expires?: string | null } | undefined)?.expires
    if (typeof expires === 'string' && new Date(expires).valueOf() <= Date.now()) {
      this.sessions.delete(sid)
      return undefined
    }
    return session
  }
}
