/**
 * Where every time decision comes from. Inject one to test timeouts without waiting.
 */
export interface Clock {
  /** Current time in epoch milliseconds. */
  now(): number
}

/** The wall clock: `Date.now()`. */
export const systemClock: Clock = Object.freeze({ now: () => Date.now() })

/** A clock that only moves when told to. For tests of expiry, renewal and touch intervals. */
export class ManualClock implements Clock {
  private current: number

  /** @param start epoch ms to start at (default: a fixed date, so runs are repeatable). */
  constructor(start = Date.UTC(2026, 0, 1)) {
    this.current = start
  }

  now(): number {
    return this.current
  }

  /** Moves the clock forward by `ms` milliseconds. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ms must be >= 0, got ${ms}`)
    this.current += ms
  }

  /** Sets the clock to `epochMs`. */
  set(epochMs: number): void {
    this.current = epochMs
  }
}
