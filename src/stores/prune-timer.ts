/**
 * Scheduled cleanup for stores whose engine does not expire records itself (files, SQLite, PostgreSQL,
 * MySQL). Each run waits the interval give or take a quarter, so several app servers started together
 * do not prune at the same moment; the timer is unref'd, so it never keeps a process alive.
 */
import { MAX_TIMER_MS, validateDelay } from './shared.js'

/** Returns `value` if it is a usable prune interval (ms, `0` for off), else throws `ConfigError` naming `option`. */
export function validatePruneInterval(value: unknown, option = 'pruneIntervalMs'): number {
  return validateDelay(value, option, 0, true)
}

/**
 * Calls `prune` about every `intervalMs` (uniformly between 0.75 and 1.25 times it) until the returned
 * function is called. A failing prune is handed to `onError` and the schedule goes on. `0` schedules nothing.
 */
export function schedulePrune(
  prune: () => Promise<unknown>,
  intervalMs: number,
  onError: (error: unknown) => void,
): () => void {
  if (intervalMs === 0) return () => {}
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  const next = (): void => {
    if (stopped) return
    const delay = Math.min(MAX_TIMER_MS, Math.round(intervalMs * (0.75 + Math.random() / 2)))
    timer = setTimeout(() => {
      prune().then(next, (error: unknown) => {
        try {
          onError(error)
        } catch {
          // A failing hook must not stop the schedule, nor become an unhandled rejection.
        }
        next()
      })
    }, delay)
    timer.unref()
  }
  next()
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}
