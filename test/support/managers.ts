/**
 * Managers on one MemoryStore behind a pausing wrapper and a manual clock, for lifecycle races at the
 * manager: each overlap is forced by holding one chosen store call. A second manager on the same
 * store stands for another process.
 */
import { ManualClock } from '../../src/core/clock.js'
import { generateKey } from '../../src/core/crypto.js'
import type { CommitResult, SessionManager } from '../../src/core/manager.js'
import type { SessionManagerOptions } from '../../src/core/options.js'
import type { Session } from '../../src/core/session.js'
import { createSessionManager } from '../../src/index.js'
import { MemoryStore } from '../../src/stores/memory/index.js'
import { pausable } from './pausing-store.js'

export const MINUTE = 60_000
/** Past the 10-minute renewal interval: the next commit of a session this old rotates its ID. */
export const RENEWAL_DUE = 11 * MINUTE
/** The keyring every manager of a setup shares. */
export const KEYS = [generateKey()]
export type Data = Record<string, unknown>

/** A clock, a MemoryStore, its pausing wrapper, and managers on it (renewal every 10 minutes unless told). */
export function setup(options: Partial<SessionManagerOptions> = {}) {
  const clock = new ManualClock()
  const memory = new MemoryStore({ clock })
  const paused = pausable(memory)
  const make = (more: Partial<SessionManagerOptions> = {}) =>
    createSessionManager<Data>({
      store: paused.store,
      keys: KEYS,
      clock,
      cookie: { secure: false },
      renewalIntervalMs: 10 * MINUTE,
      ...options,
      ...more,
    })
  return { clock, memory, paused, make, manager: make(), another: () => make() }
}

/** The session ID a commit's `Set-Cookie` hands out, if any. */
export function cookieOf(result: CommitResult): string | undefined {
  return result.setCookie?.match(/^sid=([^;]+)/)?.[1]
}

/** Loads what a browser holding `id` (or no cookie) gets. */
export function load(manager: SessionManager<Data>, id: string | undefined): Promise<Session<Data>> {
  return manager.load({ cookie: id === undefined ? undefined : `sid=${id}` })
}
