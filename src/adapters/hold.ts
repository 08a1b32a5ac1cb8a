/**
 * Holding a node response (node:http, Express) until the session is committed: the first
 * `writeHead`/`write`/`end`/`flushHeaders` is held, the commit runs, its headers join the response's,
 * and the held calls are replayed in order. Only for front doors whose framework has no hook before
 * the response leaves. A held `write` keeps node's backpressure: past the response's high-water mark it
 * returns false, and the response emits 'drain' once the hold opens and the held data has gone, so a
 * stream piped into a response whose commit is slow waits instead of piling up in memory.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import { OutgoingMessage, ServerResponse } from 'node:http'
import type { CommitResult } from '../core/manager.js'
import type { HeaderAccess } from './kernel.js'
import { applyCommit, NODE_HEADERS } from './kernel.js'

/**
 * What a hold asks of its adapter: one object per adapter, not per request, so that a hold makes no
 * closure of its own.
 */
export interface Committer<S> {
  /** Commits the request's session: the result itself when done synchronously, else a promise. */
  commit(session: S, res: ServerResponse): CommitResult | Promise<CommitResult>
  /** Answers the request in place of the held output when the commit failed. */
  fail(res: ServerResponse, error: unknown): void
}

/** Control over a response whose output is held until the session is committed. */
export interface HeldResponse {
  /**
   * `waiting` until the handler first tries to send something; `open` once output flows; `failed`
   * once the commit failed and the adapter answered instead (the handler's later output is dropped).
   */
  phase: 'waiting' | 'committing' | 'open' | 'failed'
  /**
   * Settles (never rejects) once an asynchronous commit is over and the held output replayed or
   * failed; `undefined` while waiting, or when the commit answered synchronously.
   */
  settled: Promise<void> | undefined
}

/** A held output call: index into writeHead, write, end, flushHeaders, and its arguments. */
type Held = readonly [number, unknown[]]

interface HoldState extends HeldResponse {
  readonly res: ServerResponse
  readonly session: unknown
  readonly committer: Committer<unknown>
  readonly originals: readonly OutputMethod[]
  /** Calls held while an asynchronous commit runs (none are kept while the commit is synchronous). */
  held: Held[] | null
  /** Bytes of the held writes, against the response's high-water mark. */
  heldBytes: number
  /** A held write returned false: its writer waits for a 'drain'. */
  owesDrain: boolean
}

type OutputMethod = (...args: unknown[]) => unknown
type OutputMethods = Record<(typeof OUTPUT)[number], OutputMethod>

/** The response methods that send output, in the order of `Held`'s index. */
const OUTPUT = ['writeHead', 'write', 'end', 'flushHeaders'] as const

/** The hold of a response held through its own properties, on the response itself (the cheapest way). */
const HOLD = Symbol('latchkey.hold')
type Holding = { [HOLD]?: HoldState }

/**
 * The hold of a response held through its prototype: adding a property to it is what must be avoided
 * there (see {@link holdViaPrototype}). Not for every response: a WeakMap entry per response costs the
 * garbage collector more than a property (measured on node:http: some 25 µs of CPU per request when
 * every hold lived here until its response was collected), so entries go as soon as the hold opens.
 */
const HOLDS = new WeakMap<object, HoldState>()

function callOriginal(state: HoldState, index: number, args: unknown[]): unknown {
  return (state.originals[index] as OutputMethod).apply(state.res, args)
}

function open(state: HoldState): void {
  state.phase = 'open'
  // Open, a hold through the prototype does what no hold does: its entry can go. Entries dropped at
  // once keep the WeakMap near empty, and the garbage collector's work on it with them.
  if (HOLDS.get(state.res) === state) HOLDS.delete(state.res)
}

/**
 * Ends a synchronous commit: the call that started it goes through with the commit's headers, and
 * what it returns goes back to the caller. A call that throws (as node's own would: bad status, odd
 * header array) throws out of here.
 */
function openWith(state: HoldState, result: CommitResult, index: number, args: unknown[]): unknown {
  open(state)
  if (index === 0) {
    replayWriteHead(state, args, result)
    return state.res
  }
  applyCommit(NODE_HEADERS, state.res, result)
  return callOriginal(state, index, args)
}

/**
 * Ends an asynchronous commit: replays the held output, or fails the response if replaying throws.
 * A writer told to wait gets its 'drain': from node, when a replayed write found node's buffer full
 * (node owes it then), else from here, once the replayed data is in node's hands.
 */
function replayHeld(state: HoldState, result: CommitResult): void {
  const held = state.held ?? []
  state.held = null
  let nodeOwesDrain = false
  try {
    open(state)
    // The head goes first, whenever it was called: the commit's headers are folded into it.
    const head = held.find(([index]) => index === 0)
    if (head) replayWriteHead(state, head[1], result)
    else applyCommit(NODE_HEADERS, state.res, result)
    for (const [index, args] of held) {
      if (index === 0) continue
      const answer = callOriginal(state, index, args)
      if (index === 1 && answer === false) nodeOwesDrain = true
    }
  } catch (error) {
    // Nobody is left to throw to: the handler's call returned long ago.
    failHold(state, error)
    return
  }
  if (state.owesDrain && !nodeOwesDrain) process.nextTick(emitDrain, state.res)
}

/** The 'drain' a held write promised, as node emits its own: later, and not on a response that is done. */
function emitDrain(res: ServerResponse): void {
  if (!res.writableEnded && !res.destroyed) res.emit('drain')
}

/**
 * Holds a write's chunk: true while the bytes held stay under the response's high-water mark, false
 * (wait for 'drain') from the write that reaches it, as node's own `write` answers.
 */
function holdWrite(state: HoldState, args: unknown[]): boolean {
  state.heldBytes += byteLengthOf(args[0], args[1])
  if (state.heldBytes < state.res.writableHighWaterMark) return true
  state.owesDrain = true
  return false
}

/** A chunk's length in bytes, in its encoding; 0 for what node's `write` will refuse when replayed. */
function byteLengthOf(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') {
    return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
  }
  return chunk instanceof Uint8Array ? chunk.byteLength : 0
}

function failHold(state: HoldState, error: unknown): void {
  // No 'drain' for a writer told to wait: the failure answer ends the response (or destroys it), and
  // its 'close' is what lets such a writer go, as for any response that ends under it.
  // Open while the failure answer goes out through the interceptors, then closed to the handler:
  // its output after that (an end() after the writeHead whose commit failed) must not reach node,
  // which would throw write-after-end with nobody to catch it.
  state.phase = 'open'
  state.held = null
  try {
    state.committer.fail(state.res, error)
  } finally {
    state.phase = 'failed'
  }
}

function intercept(state: HoldState, index: number, args: unknown[]): unknown {
  const res = state.res
  switch (state.phase) {
    case 'open':
      return callOriginal(state, index, args)
    case 'failed':
      return index === 1 ? false : res
    case 'committing':
      if (state.held === null) state.held = []
      state.held.push([index, args])
      return index === 1 ? holdWrite(state, args) : res
  }
  state.phase = 'committing'
  let outcome: CommitResult | Promise<CommitResult>
  try {
    outcome = state.committer.commit(state.session, res)
  } catch (error) {
    failHold(state, error)
    return index === 1 ? false : res
  }
  // Nothing to wait for: the call goes straight through, and its own result goes back to the caller.
  if (!(outcome instanceof Promise)) return openWith(state, outcome, index, args)
  state.held = [[index, args]]
  state.settled = outcome.then(
    (result) => replayHeld(state, result),
    (error: unknown) => failHold(state, error),
  )
  return index === 1 ? holdWrite(state, args) : res
}

/**
 * One set of output methods that find their hold by `this` (no closures per request). Installed on a
 * shared prototype (`fallback` given), they hold only responses held that way, and pass the others
 * to `fallback`'s methods: a response held through its own properties may reach them again from a
 * wrapper (compression's) that captured them, when replaying.
 */
function interceptors(fallback: readonly OutputMethod[] | null): OutputMethods {
  const through =
    fallback === null
      ? (self: object, index: number, args: unknown[]): unknown => {
          const state = (self as Holding)[HOLD]
          if (state === undefined)
            throw new TypeError('latchkey: a held response method called on another object')
          return intercept(state, index, args)
        }
      : (self: object, index: number, args: unknown[]): unknown => {
          // Only holds made through the prototype are here: a response held through its own
          // properties reaches these again when a wrapper that captured them is replayed.
          const state = HOLDS.get(self)
          if (state !== undefined) return intercept(state, index, args)
          return (fallback[index] as OutputMethod).apply(self, args)
        }
  return {
    writeHead(this: object, ...args: unknown[]) {
      return through(this, 0, args)
    },
    write(this: object, ...args: unknown[]) {
      return through(this, 1, args)
    },
    end(this: object, ...args: unknown[]) {
      return through(this, 2, args)
    },
    flushHeaders(this: object, ...args: unknown[]) {
      return through(this, 3, args)
    },
  }
}

/** For responses whose own properties receive the interceptors. */
const OWN_INTERCEPTORS = interceptors(null)

/** node's own output methods, in `Held`'s order: the originals of every plain response, shared by their holds. */
const NODE_ORIGINALS: readonly OutputMethod[] = Object.freeze(
  OUTPUT.map((name) => (ServerResponse.prototype as unknown as OutputMethods)[name]),
)

/** The output methods `target` has now: {@link NODE_ORIGINALS} itself when they are node's, else a copy. */
function originalsOf(target: OutputMethods): readonly OutputMethod[] {
  const node = NODE_ORIGINALS
  return target.writeHead === node[0] &&
    target.write === node[1] &&
    target.end === node[2] &&
    target.flushHeaders === node[3]
    ? node
    : [target.writeHead, target.write, target.end, target.flushHeaders]
}

/** node's own `headersSent` getter. */
const nodeHeadersSent = Object.getOwnPropertyDescriptor(OutgoingMessage.prototype, 'headersSent')?.get as (
  this: ServerResponse,
) => boolean

/** `headersSent` that also counts output held while the commit runs: to the handler, it has been sent. */
function heldHeadersSent(this: ServerResponse): boolean {
  const state = (this as Holding)[HOLD] ?? HOLDS.get(this)
  return state?.phase === 'committing' || nodeHeadersSent.call(this)
}

/**
 * Framework response prototypes (the one a framework puts between its responses and node's
 * `ServerResponse.prototype`, like Express's `express.response`) that carry the interceptors, with
 * the methods they replaced; and, per prototype a response is seen with, the one to use or null.
 */
const INSTALLED = new WeakMap<object, readonly OutputMethod[]>()
const VIA_PROTOTYPE = new WeakMap<object, readonly OutputMethod[] | null>()

/**
 * Holds `res` through its prototype chain when it can, and returns the methods to replay with; null
 * when the interceptors must go on `res` itself. This is for frameworks that swap every response's
 * prototype (Express does, per request and per mounted sub-app): V8 adds properties to an object
 * whose prototype was swapped some eighty times slower than to any other (measured here: 19 µs for
 * the five a hold needs, against 0.23 µs), and a getter put on an instance costs 2 µs more. On the
 * prototype, nothing is added to the response at all, and a sub-app's swap keeps the interceptors,
 * which sit on the prototype all of a framework's apps share (Express's `express.response`).
 * Responses of the same prototype that are not held pass straight through (a WeakMap lookup).
 */
function holdViaPrototype(res: ServerResponse): readonly OutputMethod[] | null {
  const own = res as object
  if (
    Object.hasOwn(own, 'writeHead') ||
    Object.hasOwn(own, 'write') ||
    Object.hasOwn(own, 'end') ||
    Object.hasOwn(own, 'flushHeaders') ||
    Object.hasOwn(own, 'headersSent')
  ) {
    // Something wrapped this response's methods before us (compression, on-headers...) capturing
    // node's: wrap theirs, as on any response.
    return null
  }
  const proto = Object.getPrototypeOf(res) as object | null
  if (proto === null) return null
  let known = VIA_PROTOTYPE.get(proto)
  if (known === undefined) {
    known = installOnFrameworkPrototype(proto)
    VIA_PROTOTYPE.set(proto, known)
  }
  return known
}

/** Finds the prototype just above `ServerResponse.prototype` in `proto`'s chain and installs there. */
function installOnFrameworkPrototype(proto: object): readonly OutputMethod[] | null {
  let base: object | null = proto
  for (;;) {
    if (base === null || base === ServerResponse.prototype) return null
    const parent = Object.getPrototypeOf(base) as object | null
    if (parent === ServerResponse.prototype) break
    // An object in between with its own output methods would hide the interceptors.
    if (OUTPUT.some((name) => Object.hasOwn(base as object, name)) || Object.hasOwn(base, 'headersSent')) {
      return null
    }
    base = parent
  }
  let originals = INSTALLED.get(base)
  if (originals === undefined) {
    const target = base as Record<string, OutputMethod>
    originals = OUTPUT.map((name) => target[name] as OutputMethod)
    Object.assign(base, interceptors(originals))
    Object.defineProperty(base, 'headersSent', { configurable: true, get: heldHeadersSent })
    INSTALLED.set(base, originals)
  }
  return originals
}

/**
 * Holds back every output call on `res` until `committer` has committed `session`, then applies the
 * commit's headers and replays the calls in order. If the commit fails, the held output is dropped
 * and `committer.fail` answers. A commit that answers synchronously (nothing to wait for) lets the
 * first output call straight through. The interceptors stay on the object and pass through once
 * done: removing them would cost more.
 *
 * `viaPrototype` (for frameworks that give each response a prototype of their own, like Express):
 * put the interceptors on that prototype once instead of on every response, and make `headersSent`
 * true while held output waits for the commit, so the framework's own error and 404 handlers do not
 * start a second response behind it.
 */
export function holdUntilCommitted<S>(
  res: ServerResponse,
  session: S,
  committer: Committer<S>,
  viaPrototype = false,
): HeldResponse {
  // A second hold on one response (two managers' middleware in one app) wraps the first one's
  // methods through its own properties: the prototype holds one response's hold at a time.
  const shared = viaPrototype && !HOLDS.has(res) ? holdViaPrototype(res) : null
  const target = res as unknown as OutputMethods
  const state: HoldState = {
    res,
    session,
    committer: committer as Committer<unknown>,
    originals: shared ?? originalsOf(target),
    held: null,
    heldBytes: 0,
    owesDrain: false,
    phase: 'waiting',
    settled: undefined,
  }
  if (shared !== null) {
    HOLDS.set(res, state)
  } else {
    ;(res as Holding)[HOLD] = state
    target.writeHead = OWN_INTERCEPTORS.writeHead
    target.write = OWN_INTERCEPTORS.write
    target.end = OWN_INTERCEPTORS.end
    target.flushHeaders = OWN_INTERCEPTORS.flushHeaders
    if (viaPrototype) Object.defineProperty(res, 'headersSent', { configurable: true, get: heldHeadersSent })
  }
  return state
}

function replayWriteHead(state: HoldState, args: unknown[], result: CommitResult): void {
  const res = state.res
  const [status, second, third] = args
  const withMessage = typeof second === 'string'
  const headers = withMessage ? third : second
  if (
    headers &&
    typeof headers === 'object' &&
    !Array.isArray(headers) &&
    res.getHeaderNames().length === 0
  ) {
    // Nothing set on the response before: node takes one merged object as it is, header by header.
    const merged: OutgoingHttpHeaders = {}
    for (const name in headers) {
      const value = (headers as OutgoingHttpHeaders)[name]
      if (value !== undefined) merged[name] = value
    }
    applyCommit(OBJECT_HEADERS, merged, result)
    callOriginal(state, 0, withMessage ? [status, second, merged] : [status, merged])
    return
  }
  if (headers && typeof headers === 'object' && (!Array.isArray(headers) || headers.length % 2 === 0)) {
    // Fold the handler's headers in first, as node's writeHead would, so ours are added to them
    // (Set-Cookie, Vary) or replace them (Cache-Control) rather than being overwritten by them.
    foldHeaders(res, headers)
    applyCommit(NODE_HEADERS, res, result)
    callOriginal(state, 0, withMessage ? [status, second] : [status])
    return
  }
  // No headers, or something node refuses (an odd raw array): set ours first, let node answer as it does.
  applyCommit(NODE_HEADERS, res, result)
  callOriginal(state, 0, args)
}

/**
 * The key `headers` holds a header under (names compare without regard to case), or undefined. With
 * `only`, any other key for the same header is removed: what replaces the header is its only value.
 */
function keyOf(headers: OutgoingHttpHeaders, lower: string, only: boolean): string | undefined {
  let found: string | undefined
  for (const key in headers) {
    if (key.length !== lower.length || key.toLowerCase() !== lower) continue
    if (found === undefined) found = key
    else if (only) delete headers[key]
    else break
  }
  return found
}

/** A writeHead header object (our own copy of the handler's), its names in any case. */
const OBJECT_HEADERS: HeaderAccess<OutgoingHttpHeaders> = {
  get: (headers, name) => {
    const key = keyOf(headers, name, false)
    return key === undefined ? undefined : headers[key]
  },
  set: (headers, name, value) => {
    headers[keyOf(headers, name.toLowerCase(), true) ?? name] = value
  },
  appendCookie: (headers, cookie) => {
    const cookies: string[] = []
    let found: string | undefined
    for (const key in headers) {
      if (key.length !== 10 || key.toLowerCase() !== 'set-cookie') continue
      const value = headers[key]
      if (Array.isArray(value)) cookies.push(...value)
      else cookies.push(String(value))
      if (found === undefined) found = key
      else delete headers[key]
    }
    cookies.push(cookie)
    headers[found ?? 'Set-Cookie'] = cookies
  },
}

/**
 * Puts writeHead's headers on the response the way node's writeHead does once headers are set: an
 * object's names replace existing ones; a raw array (`[name, value, name, value, ...]`, even length)
 * first removes every name it holds, then appends each pair, so repeated names all arrive.
 */
function foldHeaders(res: ServerResponse, headers: object): void {
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) res.removeHeader(headers[i])
    for (let i = 0; i < headers.length; i += 2) if (headers[i]) res.appendHeader(headers[i], headers[i + 1])
    return
  }
  for (const name in headers) {
    const value = (headers as OutgoingHttpHeaders)[name]
    if (value !== undefined) res.setHeader(name, value)
  }
}
