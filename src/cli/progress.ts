/**
 * A progress bar on stderr for long work (prune, rekey, revoke --all), drawn only when stderr is a
 * terminal and the output is not `--json`; otherwise every call does nothing.
 *
 * The time left is estimated here, at the average rate since the start. cli-progress's own estimate
 * takes the rate of the last ten items, and the items of `revoke --all` come in bursts (a user's
 * other sessions, already ended with the first, pass in a microsecond): it read `eta 0s` for most of
 * the run.
 */
import cliProgress from 'cli-progress'
import type { Output } from './context.js'

export interface Progress {
  /** Whether a bar is drawn: work done only to move the bar can be skipped when it is not. */
  readonly shown: boolean
  /** One more item done, or `count` more. */
  increment(count?: number): void
  /** The total became known (or grew: records created while the command runs). */
  setTotal(total: number): void
  /** Removes the bar. */
  stop(): void
}

const QUIET: Progress = Object.freeze({ shown: false, increment() {}, setTotal() {}, stop() {} })

/**
 * A bar labelled `label` when `enabled` and the output is interactive; `total` undefined while unknown
 * (the bar then shows a count and the elapsed time).
 */
export function progress(
  out: Output,
  label: string,
  total: number | undefined,
  enabled = true,
  now: () => number = Date.now,
): Progress {
  if (!enabled || !out.interactive) return QUIET
  const known = total !== undefined
  const bar = new cliProgress.SingleBar({
    stream: out.io.stderr,
    format: known
      ? `${label} [{bar}] {percentage}% {value}/{total} {duration_formatted} (eta {remaining})`
      : `${label} {value} {duration_formatted}`,
    hideCursor: true,
    clearOnComplete: true,
    barCompleteChar: '#',
    barIncompleteChar: '-',
    fps: 10,
  })
  const started = now()
  let current = total ?? 0
  let done = 0
  bar.start(current, 0, { remaining: timeLeft(0, 0, current) })
  return {
    shown: true,
    increment(count = 1) {
      if (count <= 0) return
      done += count
      bar.increment(count, { remaining: timeLeft(now() - started, done, current) })
    },
    setTotal(next: number) {
      if (known && next > current) {
        current = next
        bar.setTotal(next)
      }
    },
    stop() {
      bar.stop()
    },
  }
}

/**
 * The time left to do `total` items when `done` took `elapsedMs`, at that average rate: `?` before the
 * first item, then as `45s`, `3m05s`, `2h04m`.
 */
export function timeLeft(elapsedMs: number, done: number, total: number): string {
  if (done === 0) return '?'
  const seconds = Math.ceil((elapsedMs * Math.max(0, total - done)) / done / 1000)
  if (seconds < 60) return `${seconds}s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, '0')}s`
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`
}
