/**
 * A store wrapper that holds chosen calls until the test lets them go, for deterministic interleavings:
 *
 *     const { store, pause } = pausable(new MemoryStore({ clock }))
 *     const held = pause('update', { when: 'before' })
 *     const committing = manager.commit(session)   // its update() is now held
 *     await held.reached                           // ... do what must happen in between ...
 *     held.release()
 *     await committing
 */

/** Names of the methods of `S` (the operations a pause can hold). */
export type Operation<S> = {
  [K in keyof S]-?: S[K] extends (...args: never[]) => unknown ? K : never
}[keyof S] &
  string

type Args<F> = F extends (...args: infer A) => unknown ? A : never

/** Where a call is held: before it reaches the real store, or after the store answered. */
export type PausePoint = 'before' | 'after'

export interface PauseOptions<A> {
  /** Default `'before'`. */
  when?: PausePoint
  /** Holds only a call whose arguments match; other calls pass. Default: the next call. */
  match?: (args: A) => boolean
}

/** One armed pause. It holds one call, the first that matches after it was armed. */
export interface Pause {
  /** Resolves once the held call got to the pause point. */
  readonly reached: Promise<void>
  /** Lets the held call go on (or, if none came yet, lets the matching call pass when it comes). */
  release(): void
}

export interface Pausable<S> {
  /** The wrapped store: every method of the real one, same `this`, same results. */
  readonly store: S
  /** The operation of every call made through {@link store}, in order, held or not. */
  readonly calls: string[]
  /** Arms a one-shot pause on the next call of `operation` (that `match`es). */
  pause<K extends Operation<S>>(operation: K, options?: PauseOptions<Args<S[K]>>): Pause
  /** Releases every pause armed so far (for cleanup: nothing stays held). */
  releaseAll(): void
}

interface Armed {
  readonly operation: string
  readonly when: PausePoint
  readonly match: ((args: never) => boolean) | undefined
  readonly gate: Promise<void>
  arrive(): void
}

/**
 * Wraps `store` (any object with methods: a `SessionStore` and its optional capabilities). A call no
 * armed pause matches goes straight to the real method and returns its very promise. Promise-returning
 * methods are held as such; `list()` returns an async iterable, so a pause on it holds the iteration:
 * before its first item (`before`) or before it reports done (`after`).
 */
export function pausable<S extends object>(store: S): Pausable<S> {
  const armed: Armed[] = []
  const releases: (() => void)[] = []
  const calls: string[] = []

  function take(operation: string, args: unknown[]): Armed | undefined {
    const index = armed.findIndex(
      (pause) => pause.operation === operation && (pause.match?.(args as never) ?? true),
    )
    return index === -1 ? undefined : armed.splice(index, 1)[0]
  }

  function call(operation: string, method: (...args: unknown[]) => unknown, args: unknown[]): unknown {
    calls.push(operation)
    const pause = take(operation, args)
    if (!pause) return method.apply(store, args)
    if (operation === 'list') return holdIteration(method.apply(store, args) as AsyncIterable<unknown>, pause)
    if (pause.when === 'before') {
      pause.arrive()
      return pause.gate.then(() => method.apply(store, args))
    }
    return Promise.resolve(method.apply(store, args)).then(
      (value) => {
        pause.arrive()
        return pause.gate.then(() => value)
      },
      (error: unknown) => {
        pause.arrive()
        return pause.gate.then(() => Promise.reject(error))
      },
    )
  }

  const wrapped = new Proxy(store, {
    get(target, property) {
      // The synchronous methods (getSync, updateSync...) are hidden, so the manager takes the
      // asynchronous path, whose calls a pause can hold.
      if (typeof property === 'string' && property.endsWith('Sync')) return undefined
      const value: unknown = Reflect.get(target, property, target)
      if (typeof value !== 'function' || typeof property !== 'string' || property === 'constructor') {
        return value
      }
      return (...args: unknown[]) => call(property, value as (...args: unknown[]) => unknown, args)
    },
  })

  return {
    store: wrapped,
    calls,
    pause(operation, options = {}) {
      let arrive = (): void => {}
      let release = (): void => {}
      const reached = new Promise<void>((resolve) => {
        arrive = resolve
      })
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      armed.push({ operation, when: options.when ?? 'before', match: options.match, gate, arrive })
      releases.push(release)
      return { reached, release }
    },
    releaseAll() {
      armed.length = 0
      for (const release of releases) release()
    },
  }
}

function holdIteration(iterable: AsyncIterable<unknown>, pause: Armed): AsyncIterable<unknown> {
  return {
    async *[Symbol.asyncIterator]() {
      if (pause.when === 'before') {
        pause.arrive()
        await pause.gate
      }
      yield* iterable
      if (pause.when === 'after') {
        pause.arrive()
        await pause.gate
      }
    },
  }
}
