/**
 * Model-based property test of the lifecycle under interleaving. fast-check generates a run: requests
 * (read, write, login, logout, regenerate) started by three browsers on two managers sharing one store
 * (two processes), revocations, clock advances, and the order in which the store answers. Every store
 * call is held until the run releases it, so requests interleave at every store call. After the run,
 * what happened is checked against a reference model:
 *
 * 1. A destroyed session never reappears: once a logout of a signed-in session, a revoke or a
 *    "sign out everywhere" has answered, no request that starts later gets that session (its lineage),
 *    and it is not in the store.
 * 2. An acknowledged write is never lost unless its session was destroyed: it is in the session (or in
 *    the session a login carried it into) at the end. A write is discarded only when its session was
 *    ended meanwhile, or its request outlasted the renewal grace window.
 * 3. No ID outlives its deadline: an ID forwards to its renewed successor only within the grace window,
 *    and the old ID of a login or regenerate opens nothing once that response has been sent.
 *
 * Runs: `MODEL_RUNS` (default 500). The seed: `MODEL_SEED` if set; under `CI=true` a fixed one, so that
 * a submission is judged on the same runs every time; otherwise a random one, to keep exploring (a
 * failure prints its seed and path: rerun with `MODEL_SEED` to reproduce, then fix the code or, if the
 * rule allows what happened, the oracle below).
 */
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { decodeKey, generateKey, Keyring } from '../src/core/crypto.js'
import { kindOf } from '../src/core/lifecycle/record-state.js'
import type { CommitResult, SessionManager } from '../src/core/manager.js'
import { PayloadCodec } from '../src/core/payload.js'
import { discarded, STATE } from '../src/core/session.js'
import type { SessionRecord, SessionStore, UserIndexedStore } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'

const MODEL_SEED =
  process.env.MODEL_SEED !== undefined
    ? Number(process.env.MODEL_SEED)
    : process.env.CI === 'true'
      ? 20261128
      : undefined
const MINUTE = 60_000
const GRACE_MS = 10_000
const KEYS = [generateKey()]
const keyring = new Keyring(KEYS.map((key) => decodeKey(key) as Buffer))
const codec = new PayloadCodec(keyring)

type Action = 'read' | 'write' | 'login' | 'logout' | 'regenerate'
type Op =
  | { kind: 'start'; browser: number; manager: number; action: Action; user: string; stale: number }
  | { kind: 'step'; index: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'revokeAll'; manager: number; user: string }
  | { kind: 'revoke'; manager: number; index: number }

interface Seen {
  readonly isNew: boolean
  readonly lid: string
  readonly userId: string | null
  readonly id: string
  readonly iat: number
}

interface Request {
  readonly n: number
  readonly op: Extract<Op, { kind: 'start' }>
  startTick: number
  startClock: number
  cookie: string | undefined
  loaded?: Seen
  doneTick?: number
  doneClock?: number
  dropped?: boolean
  after?: Seen
  issued?: string
}

/** Holds every store call until the run releases it. */
class SteppedStore {
  readonly pending: {
    run: () => Promise<unknown>
    resolve(value: unknown): void
    reject(error: unknown): void
  }[] = []
  passthrough = false
  readonly store: SessionStore & UserIndexedStore

  constructor(inner: MemoryStore) {
    const hold =
      <A extends unknown[], R>(method: (...args: A) => Promise<R>) =>
      (...args: A): Promise<R> => {
        if (this.passthrough) return method.apply(inner, args)
        return new Promise<R>((resolve, reject) => {
          this.pending.push({
            run: () => method.apply(inner, args),
            resolve: resolve as (value: unknown) => void,
            reject,
          })
        })
      }
    this.store = {
      get: hold(inner.get),
      create: hold(inner.create),
      update: hold(inner.update),
      touch: hold(inner.touch),
      destroy: hold(inner.destroy),
      listByUser: hold(inner.listByUser),
    }
  }

  step(index: number): void {
    const [call] = this.pending.splice(index % this.pending.length, 1)
    call?.run().then(call.resolve, call.reject)
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 8; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

function issuedId(result: CommitResult): string | undefined {
  const match = result.setCookie?.match(/^sid=([^;]*)/)
  return match ? match[1] : undefined
}

function seen(session: Awaited<ReturnType<SessionManager['load']>>): Seen {
  const state = session[STATE]
  return {
    isNew: session.isNew,
    lid: state.meta.lid,
    userId: session.userId,
    id: session.id,
    iat: state.meta.iat,
  }
}

/** The live sessions in the store, by lineage: their user and data. Forwarders and pointers are skipped. */
async function liveLineages(
  memory: MemoryStore,
): Promise<Map<string, { userId: string | null; data: Map<string, unknown> }>> {
  const out = new Map<string, { userId: string | null; data: Map<string, unknown> }>()
  for await (const record of memory.list() as AsyncIterable<SessionRecord>) {
    const opened = codec.open(record)
    if (opened === null || kindOf(opened) !== 'live') continue
    out.set(opened.meta.lid, { userId: record.userId, data: opened.data })
  }
  return out
}

async function run(ops: readonly Op[]): Promise<string[]> {
  const clock = new ManualClock()
  const memory = new MemoryStore({ clock, sweepIntervalMs: 0 })
  const stepped = new SteppedStore(memory)
  const managers = [0, 1].map(() =>
    createSessionManager({
      store: stepped.store,
      keys: KEYS,
      clock,
      cookie: { secure: false },
      idleTimeoutMs: 6 * 60 * MINUTE,
      renewalIntervalMs: 10 * MINUTE,
      renewalGraceMs: GRACE_MS,
      touchIntervalMs: MINUTE,
    }),
  ) as [SessionManager, SessionManager]
  const browsers: (string | undefined)[] = [undefined, undefined, undefined]
  const histories: string[][] = [[], [], []]
  const requests: Request[] = []
  const handles: { handle: string; lid: string }[] = []
  const dooms: { lid: string; tick: number }[] = []
  const revokeAlls: { user: string; startTick: number; doneTick: number }[] = []
  const failures: unknown[] = []
  const tasks: Promise<void>[] = []
  let tick = 0
  let advanced = 0

  const startRequest = async (request: Request): Promise<void> => {
    const manager = managers[request.op.manager % 2] as SessionManager
    request.startTick = ++tick
    request.startClock = clock.now()
    // Now and then a browser sends a cookie it held before (another tab, a stolen or restored cookie).
    const history = histories[request.op.browser] as string[]
    request.cookie = request.op.stale > 0 ? history[history.length - 1 - request.op.stale] : undefined
    request.cookie ??= browsers[request.op.browser]
    const session = await manager.load({ cookie: request.cookie ? `sid=${request.cookie}` : undefined })
    request.loaded = seen(session)
    switch (request.op.action) {
      case 'write':
        session.set(`w${request.n}`, request.n)
        break
      case 'login':
        session.login(request.op.user)
        break
      case 'logout':
        session.logout()
        break
      case 'regenerate':
        session.regenerate()
        break
      case 'read':
        break
    }
    const result = await manager.commit(session)
    request.doneTick = ++tick
    request.doneClock = clock.now()
    request.dropped = discarded(session[STATE])
    request.after = seen(session)
    request.issued = issuedId(result)
    if (request.issued !== undefined) browsers[request.op.browser] = request.issued || undefined
    if (request.issued) histories[request.op.browser]?.push(request.issued)
    const handle = manager.handleOf(session)
    if (handle) handles.push({ handle, lid: request.after.lid })
    if (request.op.action === 'logout' && request.loaded.userId !== null && !request.loaded.isNew) {
      dooms.push({ lid: request.loaded.lid, tick: request.doneTick })
    }
  }

  for (const op of ops) {
    switch (op.kind) {
      case 'start': {
        const request: Request = { n: requests.length, op, startTick: 0, startClock: 0, cookie: undefined }
        requests.push(request)
        tasks.push(startRequest(request).catch((error: unknown) => void failures.push(error)))
        break
      }
      case 'step':
        if (stepped.pending.length > 0) stepped.step(op.index)
        break
      case 'advance':
        // Stay far inside the idle timeout: sessions end here only by logout and revocation.
        if (advanced + op.ms < 60 * MINUTE) {
          advanced += op.ms
          clock.advance(op.ms)
        }
        break
      case 'revokeAll': {
        const entry = { user: op.user, startTick: ++tick, doneTick: Number.POSITIVE_INFINITY }
        revokeAlls.push(entry)
        const manager = managers[op.manager % 2] as SessionManager
        tasks.push(
          manager.revokeUserSessions(op.user).then(
            () => {
              entry.doneTick = ++tick
            },
            (error: unknown) => void failures.push(error),
          ),
        )
        break
      }
      case 'revoke': {
        const target = handles[op.index % Math.max(1, handles.length)]
        if (!target) break
        const manager = managers[op.manager % 2] as SessionManager
        tasks.push(
          manager.revoke(target.handle).then(
            () => void dooms.push({ lid: target.lid, tick: ++tick }),
            (error: unknown) => void failures.push(error),
          ),
        )
        break
      }
    }
    await settle()
  }
  // Let everything finish, the store answering in order.
  let done = false
  const all = Promise.all(tasks).then(() => {
    done = true
  })
  for (let idle = 0; !done; ) {
    if (stepped.pending.length > 0) {
      stepped.step(0)
      idle = 0
    } else if (++idle > 400) {
      throw new Error('the run did not finish: a request is stuck')
    } else {
      // A compare-and-set retry across managers may back off on a real timer for a few ms.
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    await settle()
  }
  await all
  stepped.passthrough = true

  const problems: string[] = failures.map((error) => `a request failed: ${String(error)}`)
  // Lineages born by a commit that answered: by whom and when.
  const born = new Map<string, { userId: string | null; tick: number; startTick: number }>()
  for (const request of [...requests].sort((a, b) => (a.doneTick ?? 0) - (b.doneTick ?? 0))) {
    const after = request.after
    if (!after || request.dropped || after.isNew || born.has(after.lid)) continue
    born.set(after.lid, {
      userId: after.userId,
      tick: request.doneTick as number,
      startTick: request.startTick,
    })
  }
  // Sessions a "sign out everywhere" may have ended: those of its user under way before it answered.
  const mayHaveEnded = new Set<string>()
  for (const revocation of revokeAlls) {
    for (const [lid, birth] of born) {
      if (birth.userId !== revocation.user) continue
      // Those that had answered before it started must have ended.
      if (birth.tick < revocation.startTick) dooms.push({ lid, tick: revocation.doneTick })
      if (birth.startTick < revocation.doneTick) mayHaveEnded.add(lid)
    }
  }

  // 1. A destroyed session never reappears.
  const final = await liveLineages(memory)
  for (const doom of dooms) {
    if (final.has(doom.lid)) problems.push(`lineage ${doom.lid} ended at tick ${doom.tick} is still stored`)
    for (const request of requests) {
      const loaded = request.loaded
      if (loaded && !loaded.isNew && loaded.lid === doom.lid && request.startTick > doom.tick) {
        problems.push(
          `request ${request.n} started at tick ${request.startTick} got lineage ended at ${doom.tick}`,
        )
      }
    }
  }

  // 2. An acknowledged write is never lost unless its session was destroyed.
  const ended = new Set([...dooms.map((doom) => doom.lid), ...mayHaveEnded])
  const carriedTo = new Map<string, string[]>()
  for (const request of requests) {
    const { loaded, after } = request
    if (!loaded || !after || loaded.isNew) continue
    if (request.op.action === 'logout') ended.add(loaded.lid)
    if (request.op.action === 'login' && !request.dropped) {
      ended.add(loaded.lid)
      carriedTo.set(loaded.lid, [...(carriedTo.get(loaded.lid) ?? []), after.lid])
    }
  }
  const descendants = (lid: string): string[] => {
    const out = [lid]
    for (let i = 0; i < out.length; i++)
      for (const next of carriedTo.get(out[i] as string) ?? []) out.push(next)
    return out
  }
  for (const request of requests) {
    if (request.op.action !== 'write' || !request.after || !request.loaded) continue
    const key = `w${request.n}`
    if (request.dropped) {
      const doneClock = request.doneClock as number
      const loaded = request.loaded
      const slow = doneClock - request.startClock >= GRACE_MS
      // A renewal of its session that began before this request committed, and whose window may have
      // closed by then: the window opens when the renewal's forwarder is written and lasts GRACE_MS,
      // however long the store took to land that write (the hard limit of the rule). A request that
      // loaded the old record before the forwarder landed, and commits after the window closed, finds
      // the old ID opening nothing and is discarded like any request that arrives after the window.
      const outlastedRenewal = requests.some(
        (renewal) =>
          renewal !== request &&
          (renewal.op.action === 'read' || renewal.op.action === 'write') &&
          renewal.loaded !== undefined &&
          renewal.after !== undefined &&
          !renewal.dropped &&
          !renewal.loaded.isNew &&
          renewal.loaded.lid === loaded.lid &&
          renewal.after.lid === loaded.lid &&
          renewal.after.id !== renewal.loaded.id &&
          renewal.startTick < (request.doneTick as number) &&
          doneClock >= renewal.startClock + GRACE_MS,
      )
      if (!slow && !outlastedRenewal && !descendants(loaded.lid).some((lid) => ended.has(lid))) {
        problems.push(`write ${request.n} was discarded though its session lived on`)
      }
      continue
    }
    const lineages = descendants(request.after.lid)
    const kept = lineages.some((lid) => final.get(lid)?.data.get(key) === request.n)
    if (!kept && !lineages.some((lid) => ended.has(lid))) {
      problems.push(`acknowledged write ${request.n} is lost (lineages ${lineages.join(', ')})`)
    }
  }

  // 3. No ID outlives its deadline.
  for (const request of requests) {
    const loaded = request.loaded
    if (!loaded || loaded.isNew || request.cookie === undefined) continue
    if (loaded.id !== request.cookie) {
      // The forwarder was written before any response could hand out its successor.
      const handedOut = requests
        .filter((other) => other.issued === loaded.id)
        .map((other) => other.doneClock ?? 0)
      if (request.startClock >= Math.min(...handedOut) + GRACE_MS) {
        problems.push(`request ${request.n} was forwarded from a renewed ID after the grace window`)
      }
    }
    for (const rotation of requests) {
      const action = rotation.op.action
      if ((action !== 'login' && action !== 'regenerate') || rotation.dropped) continue
      if (!rotation.loaded || rotation.loaded.isNew) continue
      if (
        rotation.issued &&
        rotation.loaded.id === request.cookie &&
        request.startTick > (rotation.doneTick ?? Infinity)
      ) {
        problems.push(`request ${request.n} opened ID retired by ${action} ${rotation.n}`)
      }
    }
  }
  return problems
}

const users = fc.constantFrom('u1', 'u2')
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('start' as const),
      browser: fc.nat(2),
      manager: fc.nat(1),
      action: fc.constantFrom<Action>('read', 'write', 'write', 'login', 'logout', 'regenerate'),
      user: users,
      stale: fc.oneof(
        { weight: 4, arbitrary: fc.constant(0) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) },
      ),
    }),
  },
  { weight: 10, arbitrary: fc.record({ kind: fc.constant('step' as const), index: fc.nat(15) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.constantFrom(1_000, 5_000, 20_000, 2 * MINUTE, 11 * MINUTE),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('revokeAll' as const), manager: fc.nat(1), user: users }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('revoke' as const), manager: fc.nat(1), index: fc.nat(9) }),
  },
)

describe('model: random interleavings of the lifecycle on two processes sharing a store', () => {
  test('no destroyed session reappears, no acknowledged write is lost, no ID outlives its deadline', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArbitrary, { minLength: 10, maxLength: 60 }), async (ops) => {
        expect(await run(ops)).toEqual([])
      }),
      { numRuns: Number(process.env.MODEL_RUNS ?? 500), seed: MODEL_SEED },
    )
  }, 120_000)
})
