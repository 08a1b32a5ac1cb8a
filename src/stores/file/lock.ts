/**
 * The per-key lock of {@link FileStore}: mutual exclusion between processes sharing a session folder,
 * built only on what Linux does atomically, with no lock ever wedged by a process that died holding it.
 *
 * A lock is a directory `<key>.lock` holding one file named by its owner's random token. Held means
 * "exists and is not empty"; an empty or missing directory is free.
 *
 * - Taking it: the taker builds `<key>.lock.<token>.new` with its owner file inside, then renames it
 *   onto `<key>.lock`. rename(2) replaces a missing or empty directory atomically and refuses a
 *   non-empty one (`ENOTEMPTY`/`EEXIST`), so of any number of takers exactly one wins.
 * - Releasing it: the owner unlinks its own file (the directory is then empty, hence free) and removes
 *   the directory if it still is empty.
 * - Breaking it: a waiter unlinks the owner file *by the token it judged stale*. The name carries the
 *   token, so a waiter can only ever remove the lock it looked at, never a fresh one another waiter took
 *   meanwhile. A lock is stale when its owner is a dead process of this machine (same boot and PID
 *   namespace, `kill(pid, 0)` says `ESRCH`), or when this waiter has seen the same owner hold it for
 *   `staleMs` (an owner on another machine, a reused PID, a stuck process).
 *
 * An owner checks its file is still there right before it commits, so a lock broken under a live but
 * stuck owner costs that owner its write (it rejects) rather than letting two writes through.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { threadId } from 'node:worker_threads'

/** Who holds a lock, as written in its owner file. */
interface LockOwner {
  /** Process ID of the owner. */
  readonly pid: number
  /** `worker_threads` thread ID of the owner within its process. */
  readonly thread: number
  /** `os.hostname()` of the owner, for messages. */
  readonly host: string
  /** Boot ID and PID namespace of the owner: PIDs are comparable only when this matches ours. */
  readonly node: string | null
  /** When the lock was taken (epoch ms of the owner's clock), for messages. */
  readonly at: number
}

/** How {@link takeLock} decides a lock is stale and tells about breaking one. */
export interface LockPolicy {
  /** A lock seen held by the same owner this long (ms) is broken; a waiter gives up after twice that. */
  readonly staleMs: number
  /** Called once for every lock broken, with why. */
  onBreak(message: string): void
}

/** A lock this process holds. */
export interface HeldLock {
  /** True while the owner file is still in place (nobody broke the lock). */
  stillHeld(): Promise<boolean>
  /** Frees the lock. Never rejects. */
  release(): Promise<void>
}

/** File-name suffix of a lock directory being built before it is renamed into place. */
export const STAGING_SUFFIX = '.new'
/** File-name suffix of a lock directory. */
export const LOCK_SUFFIX = '.lock'

const FIRST_POLL_MS = 1
const LAST_POLL_MS = 25

let thisNode: string | null | undefined
/** Tokens of the locks this thread holds now: a lock of this thread not among them was left behind. */
const heldHere = new Set<string>()

/** Boot ID and PID namespace of this process, or `null` where they cannot be read (not Linux). */
function nodeIdentity(): string | null {
  if (thisNode === undefined) {
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
      thisNode = `${boot}/${readlinkSync('/proc/self/ns/pid')}`
    } catch {
      thisNode = null
    }
  }
  return thisNode
}

/**
 * True when the owner of `token` is gone: a process of this machine and PID namespace that no longer
 * exists, or this very thread, which no longer holds it (a release that failed, say on a read-only folder).
 */
function isDeadHere(token: string, owner: LockOwner | null): boolean {
  if (!owner || owner.node === null || owner.node !== nodeIdentity()) return false
  if (owner.pid === process.pid) return owner.thread === threadId && !heldHere.has(token)
  try {
    process.kill(owner.pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

/** The owner token and parsed owner file of the lock at `path`; `null` when the lock is free. */
async function readHolder(path: string): Promise<{ token: string; owner: LockOwner | null } | null> {
  let names: string[]
  try {
    names = await readdir(path)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return null
    throw error
  }
  const token = names[0]
  if (token === undefined) return null
  try {
    const owner = JSON.parse(await readFile(join(path, token), 'utf8')) as LockOwner
    return { token, owner: typeof owner?.pid === 'number' ? owner : null }
  } catch (error) {
    // Released between the listing and the read; or an owner file that is not ours.
    return errorCode(error) === 'ENOENT' ? null : { token, owner: null }
  }
}

function describe(owner: LockOwner | null): string {
  return owner
    ? `process ${owner.pid} on ${owner.host}, taken at ${new Date(owner.at).toISOString()}`
    : 'an unknown owner'
}

/**
 * Takes the lock at `path` (`<dir>/<key>.lock`). With `wait`, polls until it is free or stale and
 * rejects after `2 * staleMs`; without, resolves `null` at once when a live owner holds it (a lock of a
 * dead process of this machine is still broken). Rejects when the folder fails.
 */
export async function takeLock(path: string, policy: LockPolicy, wait: boolean): Promise<HeldLock | null> {
  const token = randomBytes(16).toString('base64url')
  const staging = `${path}.${token}${STAGING_SUFFIX}`
  const owner: LockOwner = {
    pid: process.pid,
    thread: threadId,
    host: hostname(),
    node: nodeIdentity(),
    at: Date.now(),
  }
  await mkdir(staging, { mode: 0o700 })
  let taken = false
  try {
    await writeFile(join(staging, token), JSON.stringify(owner), { mode: 0o600, flag: 'wx' })
    const started = performance.now()
    let seen = { token: '', since: started }
    let pollMs = FIRST_POLL_MS
    for (;;) {
      try {
        await rename(staging, path)
        taken = true
        heldHere.add(token)
        return held(path, token)
      } catch (error) {
        if (errorCode(error) !== 'ENOTEMPTY' && errorCode(error) !== 'EEXIST') throw error
      }
      const holder = await readHolder(path)
      if (!holder) continue
      const now = performance.now()
      if (holder.token !== seen.token) seen = { token: holder.token, since: now }
      const dead = isDeadHere(holder.token, holder.owner)
      if (dead || (wait && now - seen.since >= policy.staleMs)) {
        await breakLock(path, holder.token)
        policy.onBreak(
          `broke the lock ${path} of ${describe(holder.owner)}: ${
            dead ? 'that process is gone' : `held for over ${policy.staleMs} ms`
          }`,
        )
        continue
      }
      if (!wait) return null
      if (now - started >= 2 * policy.staleMs) {
        throw new Error(`gave up after ${policy.staleMs * 2} ms waiting for the lock ${path}`)
      }
      await sleep(pollMs * (0.5 + Math.random()))
      pollMs = Math.min(LAST_POLL_MS, pollMs * 2)
    }
  } finally {
    if (!taken) await rm(staging, { recursive: true, force: true }).catch(() => {})
  }
}

/** Removes the owner file of `token` (only that one) and the directory if it is then empty. */
async function breakLock(path: string, token: string): Promise<void> {
  try {
    await unlink(join(path, token))
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error
  }
  await removeIfEmpty(path)
}

/** `rmdir`, which only ever removes an empty (free) lock directory; anything else is left alone. */
export async function removeIfEmpty(path: string): Promise<void> {
  try {
    await rmdir(path)
  } catch (error) {
    const code = errorCode(error)
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error
  }
}

function held(path: string, token: string): HeldLock {
  const file = join(path, token)
  return {
    stillHeld: () =>
      stat(file).then(
        () => true,
        (error: unknown) => {
          if (errorCode(error) === 'ENOENT') return false
          throw error
        },
      ),
    release: async () => {
      heldHere.delete(token)
      await unlink(file).catch(() => {})
      await removeIfEmpty(path).catch(() => {})
    },
  }
}
