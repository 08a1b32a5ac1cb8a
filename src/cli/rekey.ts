/**
 * `latchkey rekey`: re-seals every stored payload with the first key, so that an older key can be
 * retired without signing anyone out.
 *
 * Each record is re-sealed on its own, by compare-and-set, which is what makes it safe while the
 * application is serving requests: read the record, open its payload with any key of the ring, seal
 * the same plaintext with the first key, `update(record, version)`. If the application wrote the
 * record meanwhile the update fails; the record is read again and the loop starts over (usually it
 * is then already sealed with the first key, because the application seals with it too). So no write
 * of the application is ever overwritten, and no session is lost.
 *
 * Skipped: ended payloads (`''`, a logout in progress), records already sealed with the first key,
 * records that vanished meanwhile (logged out, expired). Counted as failures: records no key of the
 * ring opens (sealed with a key that was not passed, or damaged), and records still conflicting
 * once retried for as long as a commit would be (`commitTimeoutMs`). The work is resumable: stop it at any point (or let it fail) and run it again:
 * what is done is done, and done records are only read and skipped.
 */
import { setImmediate } from 'node:timers/promises'
import type { SessionManager } from '../core/manager.js'
import type { ListableStore, SessionRecord } from '../core/store.js'

/** What became of the records seen. */
export interface RekeyReport {
  /** Re-sealed with the first key by this run. */
  resealed: number
  /** Already sealed with the first key. */
  current: number
  /** Ended payloads, and records that vanished (logout, expiry) before they could be re-sealed. */
  skipped: number
  /** No key of the ring opens them: sealed with a key that was not passed, or damaged. Left as they are. */
  unopenable: number
  /** Still conflicting with the application's writes after retrying for `commitTimeoutMs`. Left for a rerun. */
  busy: number
  /** Compare-and-set conflicts met (and retried) on the way. */
  conflicts: number
}

export interface RekeyOptions {
  /** Records re-sealed at once. Default 4. */
  concurrency?: number
  /** Stops taking new records when aborted; the ones in flight finish. */
  signal?: AbortSignal
  /** Called once per record seen. */
  onRecord?: () => void
}

/** Records between two turns of the event loop. */
const YIELD_EVERY = 64

/** A report with every count at zero. */
export function emptyReport(): RekeyReport {
  return { resealed: 0, current: 0, skipped: 0, unopenable: 0, busy: 0, conflicts: 0 }
}

/**
 * Re-seals every record of `store` with the first key of `manager`'s ring (`SessionManager.reseal`),
 * counting into `report` as it goes (so that a caller still knows what was done when the store fails
 * half way, and this rejects).
 */
export async function rekey(
  manager: SessionManager,
  store: ListableStore,
  report: RekeyReport,
  options: RekeyOptions = {},
): Promise<void> {
  const concurrency = Math.max(1, options.concurrency ?? 4)
  const inFlight = new Set<Promise<void>>()
  let failure: { error: unknown } | undefined
  const one = async (record: SessionRecord): Promise<void> => {
    try {
      report[await manager.reseal(record, () => report.conflicts++)]++
      options.onRecord?.()
    } catch (error) {
      failure ??= { error }
    }
  }
  try {
    let seen = 0
    for await (const record of store.list()) {
      // A synchronous store (SQLite) never leaves the microtask queue: give signals and the progress bar a turn.
      if (++seen % YIELD_EVERY === 0) await setImmediate()
      if (options.signal?.aborted || failure !== undefined) break
      const task: Promise<void> = one(record).finally(() => inFlight.delete(task))
      inFlight.add(task)
      if (inFlight.size >= concurrency) await Promise.race(inFlight)
    }
  } catch (error) {
    failure ??= { error }
  }
  await Promise.all(inFlight)
  if (failure !== undefined) throw failure.error
}
