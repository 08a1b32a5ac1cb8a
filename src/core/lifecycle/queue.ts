/**
 * The two building blocks of every compare-and-set loop in latchkey: a per-key queue (inside one
 * process, work on one key runs one task at a time, so it never conflicts with itself) and the
 * jittered back-off between retries (across processes, retries spread out and are bounded by time).
 * Used by the manager's commits, FileStore's writers and the CLI's `rekey`.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { ConflictError } from '../errors.js'

/** Runs tasks on one key one after another within this process; tasks on different keys run freely. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>()

  /** True while a task on `key` is queued or running. */
  busy(key: string): boolean {
    return this.tails.has(key)
  }

  /** The last task queued on `key` (its settling), or `undefined` when none is: tells whether anything was queued since. */
  last(key: string): Promise<void> | undefined {
    return this.tails.get(key)
  }

  /** Runs `task` once every task queued before it on `key` has settled, and resolves (or rejects) as it does. */
  async run<R>(key: string, task: () => Promise<R>): Promise<R> {
    const previous = this.tails.get(key)
    let done = (): void => {}
    const mine = new Promise<void>((resolve) => {
      done = resolve
    })
    const tail = previous ? previous.then(() => mine) : mine
    this.tails.set(key, tail)
    try {
      if (previous) await previous
      return await task()
    } finally {
      done()
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }
}

/** A random pause of up to `2 ** attempt` ms, capped at `capMs`: retries from several processes spread out. */
export function backOff(attempt: number, capMs = 100): Promise<void> {
  return sleep(Math.random() * Math.min(capMs, 2 ** attempt)).then(() => undefined)
}

/**
 * A time bound for one compare-and-set loop: {@link Deadline.pause} rejects with `ConflictError` once
 * `budgetMs` have passed since it was made, and otherwise backs off before the next attempt.
 */
export class Deadline {
  private readonly endsAt: number

  constructor(budgetMs: number) {
    this.endsAt = performance.now() + budgetMs
  }

  /** Before retry `attempt`: `ConflictError` past the deadline, else the jittered back-off. */
  async pause(attempt: number): Promise<void> {
    if (performance.now() > this.endsAt) throw new ConflictError()
    if (attempt > 1) await backOff(attempt)
  }
}
