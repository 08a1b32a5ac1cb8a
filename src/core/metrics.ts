/**
 * Metrics, through the OpenTelemetry API: loads, commits, compare-and-set conflicts and retries,
 * lifecycle events (renewals, ends by reason, rejected cookies), CSRF refusals by reason, and the
 * latency of every store call. `@opentelemetry/api` is an optional peer dependency: when it is
 * installed and the application registered an SDK's meter provider before creating the manager, the
 * manager records into it; otherwise nothing is recorded (and without the package nothing is loaded). An application can
 * also hand its own `Meter` (`metrics` option), or turn metrics off (`metrics: false`).
 *
 * Instruments (all counters are monotonic; names follow OpenTelemetry's conventions):
 *
 * | instrument | kind | attributes |
 * | --- | --- | --- |
 * | `latchkey.session.loads` | counter | `outcome`: `live`, `anonymous`, `rejected` |
 * | `latchkey.session.commits` | counter | `path`: `sync`, `async`, `abandoned` |
 * | `latchkey.session.events` | counter | `event`: the lifecycle event (`created`, `login`, `renewed`, `destroyed`, `revoked`, `expired`, `rejected`, `dropped`, ...); `reason` for `revoked` (`revoked`, `signed-out-everywhere`, `session-cap`), `expired` (`idle-timeout`, `absolute-timeout`) and `rejected` (`malformed`, `unknown`, `tampered`, `key-retired`): fixed sets (`SessionEventReasons`), never free text |
 * | `latchkey.store.conflicts` | counter | none: a compare-and-set that lost (another process wrote) |
 * | `latchkey.store.retries` | counter | none: a write tried again after a conflict |
 * | `latchkey.csrf.refusals` | counter | `reason`: the `CsrfError` reason |
 * | `latchkey.store.duration` | histogram, ms | `operation` (`get`, `update`, ...), `outcome`: `ok`, `error` |
 */
import { createRequire } from 'node:module'
import { ConfigError } from './errors.js'
import type { SessionEvent, SessionEventReason } from './events.js'

/** The part of an OpenTelemetry `Counter` latchkey uses. */
export interface CounterLike {
  add(value: number, attributes?: Record<string, string>): void
}

/** The part of an OpenTelemetry `Histogram` latchkey uses. */
export interface HistogramLike {
  record(value: number, attributes?: Record<string, string>): void
}

/** The part of an OpenTelemetry `Meter` latchkey uses: `metrics.getMeter('my-app')` is one. */
export interface MeterLike {
  createCounter(name: string, options?: { description?: string; unit?: string }): CounterLike
  createHistogram(name: string, options?: { description?: string; unit?: string }): HistogramLike
}

/** What the manager records; {@link NO_METRICS} when metrics are off. */
export interface SessionMetrics {
  /** Whether anything is recorded (the store's latency is only timed then). */
  readonly enabled: boolean
  load(outcome: 'live' | 'anonymous' | 'rejected'): void
  commit(path: 'sync' | 'async' | 'abandoned'): void
  /** A lifecycle event; `reason` is one word of its type's fixed set (see `SessionEventReasons`). */
  event(event: SessionEvent['type'], reason?: SessionEventReason): void
  conflict(): void
  retry(): void
  csrfRefusal(reason: string): void
  storeCall(operation: string, ok: boolean, milliseconds: number): void
}

/** Records nothing. */
export const NO_METRICS: SessionMetrics = Object.freeze({
  enabled: false,
  load() {},
  commit() {},
  event() {},
  conflict() {},
  retry() {},
  csrfRefusal() {},
  storeCall() {},
})

/** Attribute objects made once, so that recording allocates nothing for them. */
function cached<K extends string>(
  make: (value: K) => Record<string, string>,
): (value: K) => Record<string, string> {
  const made = new Map<K, Record<string, string>>()
  return (value) => {
    let attributes = made.get(value)
    if (attributes === undefined) {
      attributes = Object.freeze(make(value)) as Record<string, string>
      made.set(value, attributes)
    }
    return attributes
  }
}

/** {@link SessionMetrics} recording into `meter`'s instruments. */
export function meterMetrics(meter: MeterLike): SessionMetrics {
  const loads = meter.createCounter('latchkey.session.loads', { description: 'Sessions loaded, by outcome' })
  const commits = meter.createCounter('latchkey.session.commits', {
    description: 'Sessions committed, by path',
  })
  const events = meter.createCounter('latchkey.session.events', {
    description: 'Lifecycle events: creations, sign-ins, renewals, ends by reason, rejected cookies',
  })
  const conflicts = meter.createCounter('latchkey.store.conflicts', {
    description: 'Compare-and-set writes that lost to another writer',
  })
  const retries = meter.createCounter('latchkey.store.retries', {
    description: 'Writes tried again after a conflict',
  })
  const refusals = meter.createCounter('latchkey.csrf.refusals', {
    description: 'Requests refused by the CSRF check',
  })
  const durations = meter.createHistogram('latchkey.store.duration', {
    description: 'Duration of each store call',
    unit: 'ms',
  })
  const outcome = cached((value: string) => ({ outcome: value }))
  const path = cached((value: string) => ({ path: value }))
  const eventOf = cached((name: SessionEvent['type']) => ({ event: name }))
  const eventWith = cached((value: `${SessionEvent['type']}:${SessionEventReason}`) => {
    const [name, reason] = value.split(':')
    return { event: name as string, reason: reason as string }
  })
  const reason = cached((value: string) => ({ reason: value }))
  const call = cached((value: string) => {
    const [operation, result] = value.split(':')
    return { operation: operation as string, outcome: result as string }
  })
  return {
    enabled: true,
    load: (value) => loads.add(1, outcome(value)),
    commit: (value) => commits.add(1, path(value)),
    event: (name, why) => events.add(1, why === undefined ? eventOf(name) : eventWith(`${name}:${why}`)),
    conflict: () => conflicts.add(1),
    retry: () => retries.add(1),
    csrfRefusal: (why) => refusals.add(1, reason(why)),
    storeCall: (operation, ok, milliseconds) =>
      durations.record(milliseconds, call(`${operation}:${ok ? 'ok' : 'error'}`)),
  }
}

const require = createRequire(import.meta.url)

/**
 * The metrics of the `metrics` option: `false` records nothing; a `Meter` records into it; absent,
 * the global meter of `@opentelemetry/api` when that package is installed, else nothing.
 */
export function resolveMetrics(option: MeterLike | false | undefined): SessionMetrics {
  if (option === false) return NO_METRICS
  if (option !== undefined) {
    if (
      typeof option !== 'object' ||
      option === null ||
      typeof option.createCounter !== 'function' ||
      typeof option.createHistogram !== 'function'
    ) {
      throw new ConfigError('metrics', 'must be an OpenTelemetry Meter (metrics.getMeter(name)) or false')
    }
    return meterMetrics(option)
  }
  let api: { metrics?: { getMeter(name: string): MeterLike; getMeterProvider(): object } }
  try {
    api = require('@opentelemetry/api')
  } catch {
    return NO_METRICS
  }
  const global = api.metrics
  // No SDK registered yet: the global meter would be a no-op one for good (the metrics API has no
  // proxy provider), so nothing is timed or counted. Register the SDK before creating the manager.
  if (global === undefined || global.getMeterProvider().constructor.name === 'NoopMeterProvider')
    return NO_METRICS
  return meterMetrics(global.getMeter('latchkey'))
}
