/**
 * A progress bar on stderr for long work (prune, rekey, revoke --all), drawn only when stderr is a
 * terminal and the output is not `--json`; otherwise every call does nothing.
 */
import cliProgress from 'cli-progress'
import type { Output } from './context.js'

export interface Progress {
  /** One more item done. */
  increment(): void
  /** The total became known (or grew: records created while the command runs). */
  setTotal(total: number): void
  /** Removes the bar. */
  stop(): void
}

const QUIET: Progress = Object.freeze({ increment() {}, setTotal() {}, stop() {} })

/**
 * A bar labelled `label` when `enabled` and the output is interactive; `total` undefined while unknown
 * (the bar then shows a count and the elapsed time).
 */
export function progress(out: Output, label: string, total: number | undefined, enabled = true): Progress {
  if (!enabled || !out.interactive) return QUIET
  const known = total !== undefined
  const bar = new cliProgress.SingleBar({
    stream: out.io.stderr,
    format: known
      ? `${label} [{bar}] {percentage}% {value}/{total} {duration_formatted} (eta {eta_formatted})`
      : `${label} {value} {duration_formatted}`,
    hideCursor: true,
    clearOnComplete: true,
    barCompleteChar: '#',
    barIncompleteChar: '-',
    fps: 10,
  })
  bar.start(total ?? 0, 0)
  let current = total ?? 0
  return {
    increment() {
      bar.increment()
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
