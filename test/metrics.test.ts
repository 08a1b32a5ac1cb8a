/**
 * Metrics through the OpenTelemetry API, read back through the real SDK: loads by outcome, commits by
 * path, lifecycle events (ends by reason), compare-and-set conflicts and retries, CSRF refusals by
 * reason, and store call durations; `metrics: false` records nothing; a bad option is a ConfigError.
 * The reasons of ends and rejections are a fixed set of words (the vocabulary of `session.endedBecause`),
 * never text with a count in it: each distinct value is a time series of its own.
 */
import * as otel from '@opentelemetry/api'
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { describe, expect, test } from 'vitest'
import { generateKey } from '../src/core/crypto.js'
import { ConfigError } from '../src/core/errors.js'
import type { SessionEvent } from '../src/core/events.js'
import { storeKeyOf } from '../src/core/id.js'
import { type CsrfRequest, createCsrfGuard } from '../src/csrf/index.js'
import { createSessionManager } from '../src/index.js'
import { cookieOf, type Data, KEYS, load, MINUTE, setup } from './support/managers.js'

/** A reader the test collects from when it wants. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** Every data point collected, as `name{attr=value,...}` → value (sum, or count for a histogram). */
async function collected(reader: TestReader): Promise<Map<string, number>> {
  const points = new Map<string, number>()
  const { resourceMetrics } = await reader.collect()
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      for (const point of metric.dataPoints) {
        const attributes = Object.entries(point.attributes)
          .map(([name, value]) => `${name}=${String(value)}`)
          .sort()
          .join(',')
        const value = point.value as number | { count: number }
        points.set(
          `${metric.descriptor.name}{${attributes}}`,
          typeof value === 'number' ? value : value.count,
        )
      }
    }
  }
  return points
}

function meter() {
  const reader = new TestReader()
  const provider = new MeterProvider({ readers: [reader] })
  return { reader, meter: provider.getMeter('test') }
}

describe('metrics', () => {
  test('count loads, commits, events, conflicts, retries and store calls', async () => {
    const { reader, meter: m } = meter()
    const { make } = setup()
    const manager = make({ metrics: m })
    const other = make({ metrics: false })
    // A visitor signs in (an anonymous load, an async commit, a creation), then loads as a live session.
    const visitor = await load(manager, undefined)
    visitor.login('alice')
    const id = cookieOf(await manager.commit(visitor))
    const first = await load(manager, id)
    // Another process writes in between: this commit's compare-and-set conflicts, then is retried.
    const elsewhere = await load(other, id)
    elsewhere.set('x', 1)
    await other.commit(elsewhere)
    first.set('y', 2)
    await manager.commit(first)
    // An unknown cookie is a rejected load; a logout is an end.
    await load(manager, 'A'.repeat(43))
    const leaving = await load(manager, id)
    leaving.logout()
    await manager.commit(leaving)
    const points = await collected(reader)
    expect(points.get('latchkey.session.loads{outcome=anonymous}')).toBe(1)
    expect(points.get('latchkey.session.loads{outcome=live}')).toBe(2)
    expect(points.get('latchkey.session.loads{outcome=rejected}')).toBe(1)
    expect(points.get('latchkey.session.commits{path=async}')).toBe(3)
    expect(points.get('latchkey.session.events{event=created}')).toBe(1)
    // The sign-in that created the session is a sign-in too: a dashboard of sign-ins counts `login`.
    expect(points.get('latchkey.session.events{event=login}')).toBe(1)
    expect(points.get('latchkey.session.events{event=destroyed}')).toBe(1)
    expect(points.get('latchkey.session.events{event=rejected,reason=unknown}')).toBe(1)
    expect(points.get('latchkey.store.conflicts{}')).toBe(1)
    expect(points.get('latchkey.store.retries{}')).toBe(1)
    expect(points.get('latchkey.store.duration{operation=update,outcome=ok}')).toBeGreaterThanOrEqual(2)
    expect(points.get('latchkey.store.duration{operation=get,outcome=ok}')).toBeGreaterThanOrEqual(3)
  })

  test('ends, expiries and rejections carry a reason from a small fixed set: no counts, no free text', async () => {
    const { reader, meter: m } = meter()
    const { make, memory, clock } = setup({ maxSessionsPerUser: 3, metrics: m })
    const events: SessionEvent[] = []
    const manager = make({ onEvent: (event) => events.push(event) })
    const signIn = async (userId: string, by = manager): Promise<string> => {
      const session = await load(by, undefined)
      session.login(userId)
      const id = cookieOf(await by.commit(session))
      if (id === undefined) throw new Error('the sign-in set no cookie')
      clock.advance(1000)
      return id
    }
    // A fourth device of alice's past the cap ends her least recent one; with the `refuse` policy a
    // fifth is refused (its own session ended).
    for (let i = 0; i < 4; i++) await signIn('alice')
    const refusing = make({ sessionCapPolicy: 'refuse' })
    await expect(signIn('alice', refusing)).rejects.toMatchObject({ code: 'ERR_LATCHKEY_SESSION_CAP' })
    // One of alice's devices revoked by its handle; all three of bob's by "sign out everywhere".
    const [device] = await manager.listUserSessions('alice')
    expect(await manager.revoke(device?.handle as string)).toBe(true)
    for (let i = 0; i < 3; i++) await signIn('bob')
    expect(await manager.revokeUserSessions('bob')).toBe(3)
    // Timeouts found on load (these managers' timeouts are shorter than the stored deadlines), a
    // record sealed with a key no longer configured, a damaged one, a malformed and an unknown cookie.
    const idle = await signIn('carol')
    const absolute = await signIn('dave')
    const retired = await signIn('erin')
    const damaged = await signIn('frank')
    clock.advance(11 * MINUTE)
    expect((await load(make({ idleTimeoutMs: 10 * MINUTE }), idle)).endedBecause).toBe('idle-timeout')
    const shorter = make({ idleTimeoutMs: 10 * MINUTE, absoluteTimeoutMs: 10 * MINUTE })
    expect((await load(shorter, absolute)).endedBecause).toBe('absolute-timeout')
    expect((await load(make({ keys: [generateKey()] }), retired)).endedBecause).toBe('key-retired')
    const record = await memory.get(storeKeyOf(damaged as string))
    if (record === null) throw new Error('no record')
    const payload = `${record.payload.slice(0, -2)}${record.payload.endsWith('AA') ? 'BB' : 'AA'}`
    expect(await memory.update({ ...record, version: record.version + 1, payload }, record.version)).toBe(
      true,
    )
    expect((await load(manager, damaged)).userId).toBeNull()
    await manager.load({ cookie: 'sid=../../etc/passwd' })
    await load(manager, 'A'.repeat(43))

    const points = await collected(reader)
    const withReason = [...points.keys()]
      .filter((name) => name.startsWith('latchkey.session.events{') && name.includes('reason='))
      .sort()
    expect(withReason).toEqual([
      'latchkey.session.events{event=expired,reason=absolute-timeout}',
      'latchkey.session.events{event=expired,reason=idle-timeout}',
      'latchkey.session.events{event=rejected,reason=key-retired}',
      'latchkey.session.events{event=rejected,reason=malformed}',
      'latchkey.session.events{event=rejected,reason=tampered}',
      'latchkey.session.events{event=rejected,reason=unknown}',
      'latchkey.session.events{event=revoked,reason=revoked}',
      'latchkey.session.events{event=revoked,reason=session-cap}',
      'latchkey.session.events{event=revoked,reason=signed-out-everywhere}',
    ])
    // Every end and expiry says why: none is counted without a reason.
    expect(points.has('latchkey.session.events{event=revoked}')).toBe(false)
    expect(points.has('latchkey.session.events{event=expired}')).toBe(false)
    expect(points.get('latchkey.session.events{event=revoked,reason=session-cap}')).toBe(2)
    expect(points.get('latchkey.session.events{event=revoked,reason=revoked}')).toBe(1)
    expect(points.get('latchkey.session.events{event=revoked,reason=signed-out-everywhere}')).toBe(1)
    // The audit hook gets the same words, and how many sessions each revocation ended.
    expect(
      events
        .filter((event) => event.type === 'revoked')
        .map(({ reason, ended, userId }) => ({ reason, ended, userId })),
    ).toEqual([
      { reason: 'session-cap', ended: 1, userId: 'alice' },
      { reason: 'revoked', ended: 1, userId: 'alice' },
      { reason: 'signed-out-everywhere', ended: 3, userId: 'bob' },
    ])
    expect(events.filter((event) => event.type === 'rejected').map((event) => event.reason)).toEqual([
      'tampered',
      'malformed',
      'unknown',
    ])
  })

  test('count CSRF refusals by reason', async () => {
    const { reader, meter: m } = meter()
    const { make } = setup()
    const manager = make({ metrics: m })
    const guard = createCsrfGuard(manager, {})
    const session = await load(manager, undefined)
    const request: CsrfRequest = {
      method: 'POST',
      url: '/',
      secure: false,
      host: 'app.test',
      header: (name) => (name === 'origin' ? 'https://evil.test' : undefined),
      form: async () => null,
    }
    await expect(guard.check(session, request)).rejects.toThrow()
    const points = await collected(reader)
    expect(points.get('latchkey.csrf.refusals{reason=origin-mismatch}')).toBe(1)
  })

  test('count the synchronous path and time its store calls too', async () => {
    const { reader, meter: m } = meter()
    const { memory, clock } = setup()
    const manager = createSessionManager<Data>({
      store: memory,
      keys: KEYS,
      clock,
      cookie: { secure: false },
      metrics: m,
    })
    const session = manager.loadSync({ cookie: undefined })
    session?.set('n', 1)
    expect(session && manager.commitSync(session)).not.toBeNull()
    const signingIn = manager.loadSync({ cookie: undefined })
    signingIn?.login('bob')
    expect(signingIn && manager.commitSync(signingIn)).not.toBeNull()
    const points = await collected(reader)
    expect(points.get('latchkey.session.commits{path=sync}')).toBe(2)
    // Two sessions, and the sign-in's pending notice ("why was I signed out", for its timeouts).
    expect(points.get('latchkey.store.duration{operation=create,outcome=ok}')).toBe(3)
    expect(points.get('latchkey.session.events{event=created}')).toBe(2)
    expect(points.get('latchkey.session.events{event=login}')).toBe(1)
  })

  test('metrics: false records nothing; a bad value is a ConfigError', () => {
    const { make } = setup()
    expect(make({ metrics: false }).options.metrics.enabled).toBe(false)
    expect(() => make({ metrics: {} as never })).toThrow(ConfigError)
  })

  test('by default: the global meter provider once an SDK registered one, else nothing (not even timing)', async () => {
    const { make } = setup()
    // @opentelemetry/api is installed here, but no SDK is registered: nothing is recorded or timed.
    expect(make().options.metrics.enabled).toBe(false)
    const reader = new TestReader()
    expect(otel.metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }))).toBe(true)
    try {
      const manager = make()
      expect(manager.options.metrics.enabled).toBe(true)
      await load(manager, undefined)
      expect((await collected(reader)).get('latchkey.session.loads{outcome=anonymous}')).toBe(1)
    } finally {
      otel.metrics.disable()
    }
  })
})
