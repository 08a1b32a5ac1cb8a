/**
 * The per-key lock of `FileStore`: mutual exclusion between the processes sharing a session folder,
 * built only on what Linux does atomically, and never wedged by a process that died holding it.
 *
 * A lock is a directory `<key>.lock` holding one entry (an empty directory) whose name says who owns
 * it: `<token>.<pid>.<thread>.<machine>`, with a random token per acquisition and `machine` a hash of
 * the boot ID and PID namespace. Held means "exists and is not empty"; an empty or missing one is free.
 *
 * - Taking it: the taker builds `<key>.lock.<token>.new` with its owner entry inside, then renames it
 *   onto `<key>.lock`. rename(2) replaces a missing or empty directory atomically and refuses a
 *   non-empty one (`ENOTEMPTY`/`EEXIST`), so of any number of takers exactly one wins.
 * - Releasing it: the owner removes its own entry (the lock is then empty, hence free) and then the
 *   lock directory if it still is empty (`rmdir` never removes a non-empty one: a new owner's lock).
 * - Breaking it: a waiter removes the owner entry *by the name it judged stale*. That name carries the
 *   token, so a waiter can only ever remove the lock it looked at, never a fresh one another waiter
 *   took meanwhile. A lock is stale when its owner is a process of this machine and PID namespace that
 *   is gone (`kill(pid, 0)` says `ESRCH`), or this very thread, which no longer holds it (a release that
 *   failed); or when the waiter has seen the same owner hold it for `staleMs` (an owner on another
 *   machine, a reused PID, a stuck process).
 *
 * An owner checks its entry is still there right before it commits, so a lock broken under a live but
 * stuck owner costs that owner its write (it rejects) rather than letting two writes through.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { threadId } from 'node:worker_threads'

/** How {@link takeLock} decides a lock is stale, and whom it tells about breaking one. */
export interface LockPolicy {
  /** A lock seen held by the same owner this long (ms) is broken; a waiter gives up after twice that. */
  readonly staleMs: number
  /** Called once for every lock broken, with what and why. */
  onBreak(message: string): void
}

/** A lock this thread holds. */
export interface HeldLock {
  /** True while its owner entry is still in place (nobody broke the lock). */
  stillHeld(): Promise<boolean>
  /** Frees the lock. Never rejects: a lock it fails to free is broken at once by the next taker here. */
  release(): Promise<void>
}

/** File-name suffix of a lock directory. */
export const LOCK_SUFFIX = '.lock'

const FIRST_POLL_MS = 1
const LAST_POLL_MS = 25
/** An owner entry: token, PID, thread ID, machine. */
const OWNER = /^([A-Za-z0-9_-]{22})\.(\d+)\.(\d+)\.([A-Za-z0-9_-]+)$/
/** The machine part of an owner entry when this machine cannot be told apart (not Linux). */
const UNKNOWN_MACHINE = 'unknown'

let thisMachine: string | undefined
/** Tokens of the locks this thread holds now. */
const heldHere = new Set<string>()

/** This process's boot ID and PID namespace, hashed: PIDs of owners are comparable only when it matches. */
function machine(): string {
  if (thisMachine === undefined) {
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
      const namespace = readlinkSync('/proc/self/ns/pid')
      thisMachine = createHash('sha256').update(`${boot}/${namespace}`).digest('base64url').slice(0, 16)
    } catch {
      thisMachine = UNKNOWN_MACHINE
    }
  }
  return thisMachine
}

/** Why the owner entry `name` is stale without waiting, or `null` when its owner may be alive. */
function gone(name: string): string | null {
  const match = OWNER.exec(name)
  if (!match || match[4] === UNKNOWN_MACHINE || match[4] !== machine()) return null
  const [token, pid, thread] = [match[1] as string, Number(match[2]), Number(match[3])]
  if (pid === process.pid) {
    return thread === threadId && !heldHere.has(token) ? 'this thread no longer holds it' : null
  }
  try {
    process.kill(pid, 0)
    return null
  } catch (error) {
    return errorCode(error) === 'ESRCH' ? 'that process is gone' : null
  }
}

function describe(name: string): string {
  const match = OWNER.exec(name)
  if (!match) return `an unknown owner (${name})`
  return `process ${match[2]} ${match[4] === machine() ? 'of this machine' : 'of another machine or PID namespace'}`
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

/**
 * Takes the lock at `path` (`<dir>/<key>.lock`). With `wait`, polls until it is free or stale and
 * rejects after `2 * staleMs`; without, resolves `null` at once when an owner that may be alive holds
 * it (a lock whose owner is gone is still broken). Rejects when the folder fails (`ENOENT` when `dir`
 * is missing).
 */
export async function takeLock(path: string, policy: LockPolicy, wait: boolean): Promise<HeldLock | null> {
  const token = randomBytes(16).toString('base64url')
  const entry = `${token}.${process.pid}.${threadId}.${machine()}`
  const staging = `${path}.${token}.new`
  await mkdir(staging, { mode: 0o700 })
  let taken = false
  try {
    await mkdir(join(staging, entry), { mode: 0o700 })
    const started = performance.now()
    let seen = { name: '', since: started }
    let pollMs = FIRST_POLL_MS
    for (;;) {
      try {
        await rename(staging, path)
        taken = true
        heldHere.add(token)
        return held(path, token, entry)
      } catch (error) {
        if (errorCode(error) !== 'ENOTEMPTY' && errorCode(error) !== 'EEXIST') throw error
      }
      const name = await owner(path)
      if (name === null) continue
      const now = performance.now()
      if (name !== seen.name) seen = { name, since: now }
      const why =
        gone(name) ??
        (wait && now - seen.since >= policy.staleMs ? `held for over ${policy.staleMs} ms` : null)
      if (why) {
        await breakEntry(join(path, name))
        await removeIfEmpty(path)
        policy.onBreak(`broke the lock ${path} of ${describe(name)}: ${why}`)
        continue
      }
      if (!wait) return null
      if (now - started >= 2 * policy.staleMs) {
        throw new Error(
          `gave up after ${2 * policy.staleMs} ms waiting for the lock ${path} of ${describe(name)}`,
        )
      }
      await sleep(pollMs * (0.5 + Math.random()))
      pollMs = Math.min(LAST_POLL_MS, pollMs * 2)
    }
  } finally {
    if (!taken) await rm(staging, { recursive: true, force: true }).catch(() => {})
  }
}

/** The owner entry of the lock at `path`, or `null` when it is free. */
async function owner(path: string): Promise<string | null> {
  try {
    return (await readdir(path))[0] ?? null
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return null
    throw error
  }
}

/** Removes the owner entry judged stale (only that one: its name carries the token). */
async function breakEntry(path: string): Promise<void> {
  try {
    await rmdir(path)
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error
  }
}

/** `rmdir`: removes an empty directory (a free lock, an owner entry) and leaves anything else alone. */
export async function removeIfEmpty(path: string): Promise<void> {
  try {
    await rmdir(path)
  } catch (error) {
    const code = errorCode(error)
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error
  }
}

function held(path: string, token: string, entry: string): HeldLock {
  const mine = join(path, entry)
  return {
    stillHeld: () =>
      stat(mine).then(
        () => true,
        (error: unknown) => {
          if (errorCode(error) === 'ENOENT') return false
          throw error
        },
      ),
    release: async () => {
      heldHere.delete(token)
      await removeIfEmpty(mine).catch(() => {})
      await removeIfEmpty(path).catch(() => {})
    },
  }
}
